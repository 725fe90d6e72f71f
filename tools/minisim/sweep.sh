for m in "$@"; do MINI="$m" SAVE=/tmp/c-$(echo $m | tr -dc 'a-zA-Z0-9.').pkl PYTHONPATH=. python tools/minisim/run.py 2>&1 | head -2; done
