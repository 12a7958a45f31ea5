#!/usr/bin/env bash
# Mutation testing (mutmut) of vidcap's pure modules against their fast unit tests: no vLLM
# engine, no RTSP server. Each mutant is one small change to the code; a test must fail for it.
# Results and every surviving mutant's verdict: docs/mutation.md.
#
#   scripts/mutation.sh                 # all modules (~29 min wall on 2 shared cores)
#   scripts/mutation.sh 'stream.ids.*'  # only mutants whose names match (mutmut's patterns)
#
# It runs in a scratch copy (VIDCAP_MUTATION_DIR, default a new temporary directory) so the
# work tree gets no mutants/ folder; `mutmut show NAME` there prints a mutant's diff.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cd "${VIDCAP_VENV:-.venv}/bin" && pwd)
work=${VIDCAP_MUTATION_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/vidcap-mutation.XXXXXX")}
mkdir -p "$work"
rm -rf "$work/stream" "$work/engine" "$work/tests" "$work/mutants"
cp -r stream engine tests pyproject.toml "$work/"
find "$work" -name __pycache__ -prune -exec rm -rf {} +

# The modules under test, and the functions counted (mutmut's names, fnmatch patterns). Of
# stream/sources/pyav.py only the reconnect loop and its backoff, of
# stream/delivery/publisher.py only the outbox bookkeeping: the rest of those files is I/O
# that fast tests do not drive.
MODULES=(
    engine/guard.py
    stream/config.py
    stream/ids.py
    stream/redact.py
    stream/fair_share.py
    stream/delivery/sequencer.py
    stream/delivery/logo_alerts.py
    stream/keyframes/selector.py
    stream/sources/handoff.py
    stream/sources/pyav.py
    stream/delivery/publisher.py
)
PATTERNS=(
    'engine.guard.*'
    'stream.config.*'
    'stream.ids.*'
    'stream.redact.*'
    'stream.fair_share.*'
    'stream.delivery.sequencer.*'
    'stream.delivery.logo_alerts.*'
    'stream.keyframes.selector.*'
    'stream.sources.handoff.*'
    'stream.sources.pyav.xǁVideoSourceǁframes__mutmut_*'
    'stream.sources.pyav.xǁVideoSourceǁ_backoff__mutmut_*'
    'stream.delivery.publisher.xǁEventPublisherǁpublish__mutmut_*'
    'stream.delivery.publisher.xǁEventPublisherǁ_is_full__mutmut_*'
    'stream.delivery.publisher.xǁEventPublisherǁ_acknowledged__mutmut_*'
    'stream.delivery.publisher.xǁEventPublisherǁ_drop_oldest__mutmut_*'
    'stream.delivery.publisher.xǁEventPublisherǁ_restate__mutmut_*'
)
# Fast tests only: no vLLM engine, no RTSP server. Left out as slow (seconds per run, and
# every mutant of a module would run them): the golden-clip and subprocess tests.
TESTS=(
    tests/test_guard.py
    tests/test_config.py
    tests/test_config_errors.py
    tests/test_ids_and_redaction.py
    tests/test_security_secrets.py
    tests/test_fair_share.py
    tests/test_sequencer.py
    tests/test_logo_alerts.py
    tests/test_keyframes.py
    tests/test_selector_promises.py
    tests/test_selector_edges.py
    tests/test_handoff.py
    tests/test_reconnect_policy.py
    tests/test_source_files.py
    tests/test_outbox.py
    tests/test_publisher.py
)
SLOW='golden_cuts or kernels_run_where or vidcap_scenes or cli_exits_2 or no_secret_in_any_event'

toml_list() { printf '"%s", ' "$@"; }
cat >>"$work/pyproject.toml" <<TOML

[tool.mutmut]
source_paths = ["stream", "engine"]
only_mutate = [$(toml_list "${MODULES[@]}")]
also_copy = ["configs", "deploy", "schemas", "examples"]
pytest_add_cli_args_test_selection = [$(toml_list "${TESTS[@]}")]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q", "-k", "not ($SLOW)"]
use_git_change_detection = false
TOML
cp -r configs deploy schemas examples "$work/"

cd "$work"
echo "vidcap mutation: working in $work"
status=0
if [ $# -gt 0 ]; then PATTERNS=("$@"); fi
"$bin/mutmut" run --max-children "${MUTATION_JOBS:-2}" "${PATTERNS[@]}" || status=$?
"$bin/mutmut" results --all true >"$work/results.txt" || true
"$bin/python" - "$work/results.txt" "${PATTERNS[@]}" <<'PY'
import collections, fnmatch, re, sys
counts = collections.Counter()
survivors = []
for line in open(sys.argv[1]):
    match = re.match(r"\s*(\S+): (.+)$", line)
    if match and any(fnmatch.fnmatch(match.group(1), p) for p in sys.argv[2:]):
        counts[match.group(2).strip()] += 1
        if match.group(2).strip() not in ("killed", "timeout"):
            survivors.append(f"{match.group(1)}: {match.group(2).strip()}")
print("\n".join(survivors))
total = sum(counts.values())
killed = counts["killed"] + counts["timeout"]
print(dict(counts))
if total:
    print(f"vidcap mutation: {killed}/{total} killed ({100 * killed / total:.1f} %)")
PY
exit $status
