# /cluster.json, the cluster page's data: the file Apache's mod_wsgi loads in its oar-live-cluster
# daemon process (recipes/steps/common/web.yaml), with /usr/lib/oar-live on its Python path.
from autoconf.clusterpage import application  # noqa: F401 (what mod_wsgi calls)
