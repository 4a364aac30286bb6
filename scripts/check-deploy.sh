#!/usr/bin/env bash
# Checks the Kubernetes manifests of deploy/k8s (`make test-deploy`):
#
#  1. generated copies are current: base/prometheusrule.yaml wraps
#     deploy/prometheus/alerts.yml, base/dashboards/rewardhooks.json is
#     deploy/grafana/rewardhooks.json (`scripts/check-deploy.sh --fix`
#     rewrites both);
#  2. each layout (deploy/k8s: one Deployment per role; deploy/k8s/small:
#     all roles in one) renders with `kubectl kustomize` (or `kustomize
#     build`); without either, every file its kustomization.yaml lists must
#     exist and the files are checked one by one;
#  3. the rendered objects validate against the Kubernetes schemas
#     (kubernetes-validate --strict; CRDs such as ServiceMonitor are only
#     warned about by it);
#  4. the rules of issue 22 hold (scripts/check-deploy-rules.py): no replicas
#     where KEDA scales, KEDA in step with the configuration (all brokers,
#     groups, topics, reset policy), PDB eviction policy, no service-account
#     token, topology spread, an immutable image reference, memory limits,
#     probes and the ServiceMonitor reaching every role's metrics port.
#
# KUBERNETES_VALIDATE (default: kubernetes-validate on PATH) names the
# validator; CHECKS_REQUIRED=1 (set by .ci/run) turns a missing validator or
# PyYAML into a failure instead of a skip. A missing renderer is never an
# error (the file check of step 2 stands in), since neither kubectl nor
# kustomize is packaged by Debian or PyPI.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
K8S="$ROOT/deploy/k8s"
RULE="$K8S/base/prometheusrule.yaml"
DASH="$K8S/base/dashboards/rewardhooks.json"

fail() { echo "check-deploy: FAIL: $*" >&2; exit 1; }
say() { echo "check-deploy: $*"; }
required() { [ "${CHECKS_REQUIRED:-0}" = 1 ]; }

# The PrometheusRule is alerts.yml's groups under spec:, verbatim.
render_rule() {
  cat <<'EOF'
# GENERATED from deploy/prometheus/alerts.yml by scripts/check-deploy.sh --fix:
# edit alerts.yml (and its tests), not this file.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: rewardhooks
  labels:
    # kube-prometheus-stack's default ruleSelector matches its release name;
    # set this to what your Prometheus selects.
    release: kube-prometheus-stack
spec:
EOF
  sed -n '/^groups:/,$p' "$ROOT/deploy/prometheus/alerts.yml" | sed 's/^\(.\)/  \1/'
}

if [ "${1:-}" = --fix ]; then
  mkdir -p "$(dirname "$DASH")"
  render_rule >"$RULE"
  cp "$ROOT/deploy/grafana/rewardhooks.json" "$DASH"
  say "rewrote ${RULE#"$ROOT/"} and ${DASH#"$ROOT/"}"
  exit 0
fi

if ! python3 -c 'import yaml' 2>/dev/null; then
  required && fail "python3 lacks PyYAML (pip install pyyaml; kubernetes-validate brings it)"
  say "python3 lacks PyYAML: manifests not checked"
  exit 0
fi

# --- 1. generated copies --------------------------------------------------------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
render_rule >"$tmp/rule.yaml"
cmp -s "$tmp/rule.yaml" "$RULE" \
  || fail "${RULE#"$ROOT/"} differs from deploy/prometheus/alerts.yml: run scripts/check-deploy.sh --fix"
cmp -s "$ROOT/deploy/grafana/rewardhooks.json" "$DASH" \
  || fail "${DASH#"$ROOT/"} differs from deploy/grafana/rewardhooks.json: run scripts/check-deploy.sh --fix"
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$DASH" || fail "dashboard is not valid JSON"

# --- 2. render each layout -------------------------------------------------------
render() {
  # CHECK_DEPLOY_NO_RENDER=1 exercises the fallback below on a machine with kubectl.
  if [ "${CHECK_DEPLOY_NO_RENDER:-0}" = 1 ]; then
    return 3
  elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    kubectl kustomize "$1"
  elif command -v kustomize >/dev/null 2>&1; then
    kustomize build "$1"
  else
    return 3
  fi
}

# Without a renderer: every path a kustomization lists exists (recursively).
check_listed_files() {
  python3 - "$1" <<'PY'
import os, sys, yaml
missing = []
def walk(d):
    k = os.path.join(d, 'kustomization.yaml')
    if not os.path.exists(k):
        missing.append(k); return
    doc = yaml.safe_load(open(k))
    paths = list(doc.get('resources', [])) + list(doc.get('components', []))
    for p in doc.get('patches', []) or []:
        if 'path' in p: paths.append(p['path'])
    for g in doc.get('configMapGenerator', []) + doc.get('secretGenerator', []):
        for f in g.get('files', []):
            paths.append(f.split('=', 1)[-1])
    for p in paths:
        full = os.path.normpath(os.path.join(d, p))
        if os.path.isdir(full): walk(full)
        elif not os.path.exists(full): missing.append(f'{full} (listed in {k})')
walk(sys.argv[1])
if missing:
    sys.exit('check-deploy: FAIL: missing: ' + ', '.join(missing))
PY
}

layouts=("$K8S" "$K8S/small")
rendered=()
for layout in "${layouts[@]}"; do
  name="$(basename "$layout")"
  out="$tmp/$name.yaml"
  set +e
  render "$layout" >"$out" 2>"$tmp/render.err"
  rc=$?
  set -e
  if [ $rc = 3 ]; then
    # Not an error even in CI: neither tool comes from Debian or PyPI.
    say "no kubectl/kustomize: checking that the files ${layout#"$ROOT/"}/kustomization.yaml lists exist"
    check_listed_files "$layout"
    continue
  fi
  [ $rc = 0 ] || { cat "$tmp/render.err" >&2; fail "kustomize could not render ${layout#"$ROOT/"}"; }
  say "rendered ${layout#"$ROOT/"}: $(grep -c '^kind:' "$out") objects"
  rendered+=("$out")
done

# --- 3. schemas ----------------------------------------------------------------
validator="${KUBERNETES_VALIDATE:-kubernetes-validate}"
if command -v "$validator" >/dev/null 2>&1; then
  if [ ${#rendered[@]} -gt 0 ]; then
    # One file per object, named after it, so a failure says which.
    python3 - "$tmp/split" "${rendered[@]}" <<'PY'
import os, sys, yaml
out = sys.argv[1]; os.makedirs(out, exist_ok=True)
for path in sys.argv[2:]:
    layout = os.path.basename(path)[:-5]
    for doc in yaml.safe_load_all(open(path)):
        if not doc: continue
        name = f"{layout}-{doc['kind']}-{doc['metadata']['name']}.yaml"
        yaml.safe_dump(doc, open(os.path.join(out, name), 'w'), sort_keys=False)
PY
    # Plus the files outside the layouts: the HPA alternative, the Secret example.
    files=("$tmp"/split/*.yaml "$K8S/hpa.yaml" "$K8S/secret.example.yaml")
  else
    files=()
    while IFS= read -r f; do files+=("$f"); done < <(find "$K8S" -name '*.yaml' ! -name kustomization.yaml ! -path '*/components/*' | sort)
  fi
  "$validator" --strict --quiet "${files[@]}" || fail "kubernetes-validate rejected the manifests"
  say "kubernetes-validate: ${#files[@]} files valid"
else
  required && fail "$validator is not installed (pip install kubernetes-validate)"
  say "$validator not installed: schemas not checked"
fi

# --- 4. the deployment rules ------------------------------------------------------
if [ ${#rendered[@]} -gt 0 ]; then
  python3 "$ROOT/scripts/check-deploy-rules.py" "$ROOT" "${rendered[@]}"
else
  say "manifests not rendered: deployment rules not checked"
fi
say OK
