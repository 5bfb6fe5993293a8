#!/bin/sh
# mpirun launch agent (plm_rsh_agent) for the two-host test: instead of ssh-ing to HOST it
# enters the network namespace that plays that host.  TSR_NETNS_MAP="ip=ns ip=ns".
host=$1
shift
for pair in $TSR_NETNS_MAP; do
  if [ "${pair%%=*}" = "$host" ]; then
    exec ip netns exec "${pair#*=}" /bin/sh -c "$*"
  fi
done
echo "netns_agent: unknown host $host" >&2
exit 1
