#!/usr/bin/env bash
# House rule (issue 11): a source file over 800 lines holds more than one concern unless its
# opening comment (the first 15 lines) says why it may be long with a line containing
# "long-file:".  Lists every offender and fails if there is one.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
while IFS= read -r f; do
  n=$(wc -l <"$f")
  if [ "$n" -gt 800 ] && ! head -15 "$f" | grep -q "long-file:"; then
    echo "check_sizes: $f has $n lines and no 'long-file:' reason in its opening comment" >&2
    bad=1
  fi
done < <(git ls-files 'common/*' 'coordinator/*' 'worker/*' 'kernels/*' 'tools/*' 'tests/*' |
         grep -E '\.(c|h|cu|cuh|py)$')
[ $bad = 0 ] && echo "check_sizes: every source file is at most 800 lines or says why" >&2
exit $bad
