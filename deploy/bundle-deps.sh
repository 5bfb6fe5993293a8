#!/usr/bin/env bash
# Downloads (does not install) the Debian packages Tessera needs at run time, for a machine
# without network: bundle-deps.sh DIR, copy DIR over, then `dpkg -i DIR/*.deb` there.
set -euo pipefail
dest=${1:?usage: bundle-deps.sh DIR}
mkdir -p "$dest"
cd "$dest"
apt-get download openmpi-bin libopenmpi3 libprotobuf-c1 libuv1 libhwloc15 libnghttp2-14 libhttp-parser2.9 \
  libcjson1 libopenblas0-pthread libopenblas0 libpng16-16
ls -1 *.deb | wc -l | xargs echo "packages in $dest:"
