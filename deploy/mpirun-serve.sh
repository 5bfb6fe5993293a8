#!/usr/bin/env bash
# Serve MODEL tensor-parallel over every slot of a hostfile:
#   deploy/mpirun-serve.sh HOSTFILE MODEL [tessera serve options...]
# One rank per GPU; rank 0 binds the HTTP/gRPC ports (pass --server-name 0.0.0.0 to expose).
# TESSERA_IFACE=ib0 (an interface or a CIDR) keeps Open MPI's traffic -- MPI, mpirun's
# out-of-band channel, its PMIx server -- and NCCL's on that network (deploy/README.md).
set -euo pipefail
hostfile=${1:?usage: mpirun-serve.sh HOSTFILE MODEL [options]}
model=${2:?usage: mpirun-serve.sh HOSTFILE MODEL [options]}
shift 2
np=$(awk '!/^#/ && NF {for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) {split($i, a, "="); n += a[2]}} END {print n}' "$hostfile")
net=()
if [[ -n "${TESSERA_IFACE:-}" ]]; then
  net=(--mca btl_tcp_if_include "$TESSERA_IFACE" --mca oob_tcp_if_include "$TESSERA_IFACE")
  export PMIX_MCA_ptl_tcp_if_include="$TESSERA_IFACE" PMIX_MCA_ptl_tcp_disable_ipv6_family=1
  [[ "$TESSERA_IFACE" == */* ]] || export NCCL_SOCKET_IFNAME="$TESSERA_IFACE"
fi
# forwarded to every rank when set; an unset one is left out (mpirun's -x warns about each)
fwd=()
for v in TESSERA_HOME TESSERA_COMM_TIMEOUT NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_NVLS_ENABLE; do
  [[ -z "${!v+set}" ]] || fwd+=(-x "$v")
done
exec mpirun --hostfile "$hostfile" -np "$np" --map-by slot --bind-to none "${net[@]}" "${fwd[@]}" \
  tessera serve "$model" --tp "$np" "$@"
