#!/usr/bin/env bash
# Serve MODEL tensor-parallel over every slot of a hostfile:
#   deploy/mpirun-serve.sh HOSTFILE MODEL [tessera serve options...]
# One rank per GPU; rank 0 binds the HTTP/gRPC ports (pass --server-name 0.0.0.0 to expose).
set -euo pipefail
hostfile=${1:?usage: mpirun-serve.sh HOSTFILE MODEL [options]}
model=${2:?usage: mpirun-serve.sh HOSTFILE MODEL [options]}
shift 2
np=$(awk '!/^#/ && NF {for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) {split($i, a, "="); n += a[2]}} END {print n}' "$hostfile")
exec mpirun --hostfile "$hostfile" -np "$np" --map-by slot --bind-to none \
  -x TESSERA_HOME -x NCCL_DEBUG -x NCCL_SOCKET_IFNAME -x NCCL_NVLS_ENABLE \
  tessera serve "$model" --tp "$np" "$@"
