#!/usr/bin/env bash
# Builds kp_switch._fastpath with AddressSanitizer + UndefinedBehaviorSanitizer into a
# temporary directory and runs the C side of the fast path tests against that build
# (parse/actions/cache/megaflow differential tests, the agent's randomized megaflow
# check on the C cache, and the veth datapath tests on both port backends, AF_PACKET and AF_XDP).  Any ASan or
# UBSan report aborts the run.  Extra arguments go to pytest; with --python first, the
# rest is a Python command line run under the sanitized build instead (./run fuzz).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
out=$(mktemp -d /tmp/kp-asan.XXXXXX)
trap 'rm -rf "$out"' EXIT
inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
so="$out/_fastpath$suffix"
gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
    -fno-sanitize-recover=all -Wall -Wextra -Werror -std=gnu11 \
    -I"$inc" -I"$here/switch/csrc" "$here"/switch/csrc/*.c -o "$so" -lpthread
export KP_FASTPATH_SO="$so"
LD_PRELOAD=$(gcc -print-file-name=libasan.so)
export LD_PRELOAD
# CPython leaks by design at exit; a sanitizer report must fail the run loudly.
# Reports go to files, because pytest captures stderr and loses it on an abort.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$out/asan
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$out/ubsan
export PYTHONMALLOC=malloc       # let ASan see the buffers the glue allocates too
cd "$here"
rc=0
if [ "${1:-}" = --python ]; then
    shift
    "$py" "$@" || rc=$?
else
"$py" -m pytest -q -p no:cacheprovider -k "not ref" \
    tests/switch/test_fastpath_parse.py tests/switch/test_fastpath_actions.py \
    tests/switch/test_fastpath_cache.py tests/switch/test_fastpath_megaflow.py \
    "tests/switch/test_agent_invalidation.py::test_random_flow_mods_never_leave_a_stale_megaflow_answer[0]" \
    "tests/switch/test_agent_invalidation.py::test_random_flow_mods_never_leave_a_stale_megaflow_answer[1]" \
    tests/switch/test_fastpath_datapath.py tests/switch/test_gso.py \
    tests/switch/test_session_hash.py tests/switch/test_keyed_hash.py \
    tests/switch/test_fastpath_hostile_packets.py tests/switch/test_lb_fragments_icmp.py \
    tests/switch/test_vnet_hostile.py tests/switch/test_port_xdp.py tests/switch/test_threads.py \
    "$@" || rc=$?
fi
if compgen -G "$out/[au]*san.*" >/dev/null; then
    cat "$out"/[au]*san.* >&2
    [ "$rc" != 0 ] || rc=1
fi
exit "$rc"
