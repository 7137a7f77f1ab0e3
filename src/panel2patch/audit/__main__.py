"""``python -m panel2patch.audit results/audit/audit.json``: print a written audit's table again
(the demo's last words; ``panel2patch audit`` reruns the audit itself)."""
import json
import sys

from panel2patch.audit.report import terminal

if len(sys.argv) != 2:
    sys.exit("usage: python -m panel2patch.audit AUDIT_JSON")
print(terminal(json.loads(open(sys.argv[1]).read())))
