#!/usr/bin/env bash
# The alert rules and the Grafana dashboard may only use metrics rewardhooks
# exports (src/metrics.rs) or the ones alerts.yml's header announces as "New,
# to be added by the Rust side", plus Prometheus' and Kubernetes' own (up,
# container_*, kube_*). With promtool installed, every dashboard query must
# also parse as PromQL (Grafana variables replaced by sample values).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
python3 - "$ROOT" <<'PY'
import json, os, re, subprocess, shutil, sys, tempfile
root = sys.argv[1]
alerts = open(f"{root}/deploy/prometheus/alerts.yml").read()
dash = json.load(open(f"{root}/deploy/grafana/rewardhooks.json"))

src = open(f"{root}/src/metrics.rs").read()
exported = {"rewardhooks_" + s for s in re.findall(r'"([a-z][a-z0-9_]*)"', src)}
header = alerts.split("groups:", 1)[0]
announced = set()
if "# New, to be added by the Rust side" in header:
    announced = set(re.findall(r"^#\s+(rewardhooks_[a-z0-9_]+)", header.split("# New, to be added by the Rust side", 1)[1], re.M))
known = exported | announced

def base(name):
    for suffix in ("_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: -len(suffix)] in known:
            return name[: -len(suffix)]
    return name

exprs = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            exprs.append((p.get("title", ""), t["expr"]))
        walk(p.get("panels", []))
walk(dash["panels"])
for v in dash.get("templating", {}).get("list", []):
    q = v.get("query")
    if isinstance(q, dict):
        q = q.get("query")
    if v.get("type") == "query" and q:
        exprs.append((f"variable {v['name']}", q))

rule_exprs = "\n".join(l for l in alerts.split("groups:", 1)[1].splitlines() if not l.strip().startswith("#"))
problems = []
for where, text in [("alerts.yml", rule_exprs)] + exprs:
    for name in set(re.findall(r"\b(rewardhooks_[a-z0-9_]+)", text)):
        if base(name) not in known:
            problems.append(f"{where}: {name} is neither in src/metrics.rs nor announced in alerts.yml's header")
    for name in set(re.findall(r"\b([a-z_]+:[a-z0-9_:]+)\b", text)):
        if name not in alerts and not name.startswith("__"):
            problems.append(f"{where}: recording rule {name} is not defined in alerts.yml")

promtool = shutil.which("promtool")
if promtool:
    with tempfile.TemporaryDirectory() as d:
        rules = {"groups": [{"name": "dashboard", "rules": []}]}
        for i, (where, e) in enumerate(exprs):
            if where.startswith("variable "):
                continue
            e = e.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$instance", ".*")
            rules["groups"][0]["rules"].append({"record": f"dashboard:expr{i}", "expr": e})
        path = os.path.join(d, "dash.json")
        json.dump(rules, open(path, "w"))  # JSON is YAML
        r = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append("dashboard queries do not parse:\n" + r.stdout + r.stderr)
if problems:
    print("check-metrics-used: FAIL:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"check-metrics-used: alerts and {len(exprs)} dashboard queries use known metrics"
      + (" and parse" if promtool else " (promtool missing: PromQL not parsed)"))
PY
