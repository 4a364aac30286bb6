#!/usr/bin/env bash
# Every alert in deploy/prometheus/alerts.yml needs a promtool unit test in
# alerts_test.yml where it fires (exp_alerts with entries) and one where it
# stays quiet (exp_alerts: []). promtool itself only checks the cases that
# exist; this catches an alert added without them. Also: every alert carries
# a severity, a summary, a description and the absolute runbook_url of its
# docs/operations.md section (anchor = alert name in lower case), and
# docs/operations.md has that section.
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
python3 - <<'PY'
import re, sys
alerts = re.findall(r'^\s*-\s*alert:\s*(\S+)', open('alerts.yml').read(), re.M)
fires, quiet = set(), set()
name = None
lines = open('alerts_test.yml').read().splitlines()
for i, line in enumerate(lines):
    m = re.match(r'\s*alertname:\s*(\S+)', line)
    if m:
        name = m.group(1)
        continue
    m = re.match(r'\s*exp_alerts:\s*(.*)$', line)
    if m and name:
        rest = m.group(1).split('#')[0].strip()
        if rest == '[]':
            quiet.add(name)
        elif rest == '':
            nxt = next((l for l in lines[i + 1:] if l.strip()), '')
            if re.match(r'\s*-\s*exp_labels:', nxt):
                fires.add(name)
        name = None
problems = []
RUNBOOK = 'https://github.com/rewardhooks/rewardhooks/blob/main/docs/operations.md#'
text = open('alerts.yml').read()
blocks = re.split(r'^\s*-\s*(?=alert:|record:)', text, flags=re.M)[1:]
runbooks = open('../../docs/operations.md').read()
for b in blocks:
    m = re.match(r'alert:\s*(\S+)', b)
    if not m:
        continue
    a = m.group(1)
    if not re.search(r'^\s*severity:\s*(critical|warning|info)\s*$', b, re.M):
        problems.append(f'{a}: no severity (critical, warning or info)')
    for key in ('summary', 'description'):
        if not re.search(rf'^\s*{key}:\s*\S', b, re.M):
            problems.append(f'{a}: no {key}')
    url = re.search(r'^\s*runbook_url:\s*"?([^"\s]+)', b, re.M)
    if not url or url.group(1) != RUNBOOK + a.lower():
        problems.append(f'{a}: runbook_url must be {RUNBOOK}{a.lower()}')
    if not re.search(rf'^#+\s*{a}\s*$', runbooks, re.M):
        problems.append(f'{a}: no "## {a}" section in docs/operations.md')
for a in alerts:
    if a not in fires:
        problems.append(f'{a}: no test where it fires')
    if a not in quiet:
        problems.append(f'{a}: no test where it stays quiet')
for a in sorted((fires | quiet) - set(alerts)):
    problems.append(f'{a}: tested but not defined')
if len(set(alerts)) != len(alerts):
    problems.append('an alert name is defined twice')
if problems:
    print('check-alert-tests: FAIL:\n  ' + '\n  '.join(problems), file=sys.stderr)
    sys.exit(1)
print(f'check-alert-tests: {len(alerts)} alerts, each tested firing and quiet')
PY
