"""Host side of OAR Live: the recipe engine behind build-iso (never copied into the image).

load (`recipe`, `yamlpos`, `variables`) -> compile each macrostep to one bash script
(`compile`) -> run it in its own namespaces on an overlay (`namespace`, `engine`) -> keep it as a
checkpoint (`checkpoint`). It knows nothing of OAR: what it builds is the recipes' business.
It imports only `boot.proc` and `boot.bounded` from the rest of the project.
"""
