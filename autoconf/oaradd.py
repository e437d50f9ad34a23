"""Add one node's resources to OAR in one transaction, through OAR's own library (OAR::IO).

`oarnodesetting -a` (one Perl process per resource) inserts a resource Alive and sets its
properties afterwards in another transaction: a scheduler pass in between sees a resource
without a cpuset, and a node of 8 CPUs is 8 processes. `add_argv` is one Perl process per
node doing what `oarnodesetting -a -s STATE -p ...` does, with the same OAR::IO calls
(`add_resource`, `set_resources_property`, the same table lock) for every resource of the
node, committed together or not at all. It runs as the user oar, like OAR's own tools.
Checked against liboar-perl 2.5.9 (bookworm) and 2.6.1 (trixie): both have these functions
with these signatures.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from autoconf.resources import PROPERTIES, Resource

__all__ = ["ADD_SCRIPT", "add_argv", "parse_ids"]

# The arguments: host, state, then one "name=value;name=value" list per resource. OAR::IO
# quotes nothing (it builds SQL by interpolation, as in oarnodesetting): add_argv only passes
# the host names, integers and cpusets (integers joined by ",") checked below.
ADD_SCRIPT = r"""
use strict;
use warnings;
use OAR::IO;
use OAR::Conf qw(init_conf);
init_conf($ENV{OARCONFFILE});
my ($host, $state, @specs) = @ARGV;
my $base = OAR::IO::connect() or die("cannot connect to the OAR database\n");
$base->{RaiseError} = 1;
$base->{PrintError} = 0;
my @ids;
eval {
    # What oarnodesetting does before setting properties: a transaction (OAR::IO's lock_table
    # on PostgreSQL) and the exclusive table lock OAR's tools take against deadlocks.
    OAR::IO::lock_table($base, ["resources", "resource_logs"]);
    $base->do("LOCK TABLE resources, resource_logs IN EXCLUSIVE MODE");
    my %by_value;  # property -> value -> resource ids: one UPDATE per distinct value
    foreach my $spec (@specs) {
        my $id = OAR::IO::add_resource($base, $host, $state);
        push(@ids, $id);
        foreach my $pair (split(/;/, $spec)) {
            my ($name, $value) = split(/=/, $pair, 2);
            push(@{$by_value{$name}{$value}}, $id);
        }
    }
    foreach my $name (sort keys %by_value) {
        foreach my $value (sort keys %{$by_value{$name}}) {
            my $n = OAR::IO::set_resources_property($base, {resources => $by_value{$name}{$value}},
                                                    $name, $value);
            die("property $name was not set\n") if (!defined($n) or $n < 0);
        }
    }
    OAR::IO::unlock_table($base);
    1;
} or do {
    my $error = $@ || "unknown error";
    eval { $base->rollback(); };
    $error =~ s/\s+/ /g;
    die("nothing added to OAR: $error\n");
};
OAR::IO::disconnect($base);
print("$_\n") foreach @ids;
"""

_HOST = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
STATES = ("Alive", "Absent")
_NUMBER = re.compile(r"\d{1,9}")
# thread is absent on OAR 2.6 (a resource is a core); its cpuset lists the core's CPUs.
_VALUE = {"cpu": _NUMBER, "core": _NUMBER, "thread": _NUMBER, "mem": _NUMBER,
          "cpuset": re.compile(r"\d{1,5}(,\d{1,5}){0,255}")}


def add_argv(host: str, resources: Sequence[Resource], state: str = "Absent") -> list[str]:
    """The command adding `resources` (all of `host`) in `state`, one transaction."""
    if not _HOST.match(host) or state not in STATES:
        raise ValueError(f"refusing to add {host!r} in state {state!r}")
    specs = []
    for resource in resources:
        if resource.host != host:
            raise ValueError(f"resource of {resource.host} in {host}'s transaction")
        pairs = resource.properties()
        names = [name for name, _ in pairs]
        if names not in (list(PROPERTIES), [n for n in PROPERTIES if n != "thread"]) or not all(
            _VALUE[name].fullmatch(value) for name, value in pairs if name != "host"
        ):
            raise ValueError(f"unexpected properties {pairs!r}")
        specs.append(";".join(f"{name}={value}" for name, value in pairs))
    return ["runuser", "-u", "oar", "--", "perl", "-e", ADD_SCRIPT, host, state, *specs]


def parse_ids(stdout: str, expected: int) -> list[int]:
    """The resource ids the script printed; ValueError unless there are `expected` of them."""
    ids = [int(line) for line in stdout.split() if line.strip()]
    if len(ids) != expected:
        raise ValueError(f"OAR added {len(ids)} resources, not {expected}")
    return ids
