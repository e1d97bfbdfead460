"""Talks to a running portal-sim as an administrator would and prints a summary.

Uses only the sharing/rest API (generateToken, portals/self, portals/self/users), then the
simulator's control API for the request counts. Standard library only.
"""
import json
import sys
import urllib.parse
import urllib.request

BASE = sys.argv[1]
REFERER = "credit-steward-demo"


def call(path, **params):
    params["f"] = "json"
    data = urllib.parse.urlencode(params).encode()
    req = urllib.request.Request(f"{BASE}/sharing/rest/{path}", data=data, headers={"Referer": REFERER})
    with urllib.request.urlopen(req) as r:
        body = json.load(r)
    if "error" in body:
        raise SystemExit(f"{path} failed: {body['error']}")
    return body


token = call("generateToken", username="steward_admin", password="sim-admin-password",
             client="referer", referer=REFERER, expiration=60)["token"]
org = call("portals/self", token=token)
members, start = [], 1
while start > 0:
    page = call("portals/self/users", token=token, start=start, num=100)
    members += page["users"]
    start = page["nextStart"]

limited = [m for m in members if m["assignedCredits"] >= 0]
critical = [m for m in limited if m["availableCredits"] * 10 < m["assignedCredits"]]
warning = [m for m in limited if m not in critical and m["availableCredits"] * 2 < m["assignedCredits"]]
types = {}
for m in members:
    types[m["userLicenseTypeId"]] = types.get(m["userLicenseTypeId"], 0) + 1

print()
print(f"Organization      {org['name']} ({org['id']})")
print(f"Credits available {org['availableCredits']:,.2f}")
print(f"Budgeting         {org.get('creditAssignments', 'absent')}")
print(f"Admin contacts    {', '.join(org['contacts'])}")
print(f"Members           {len(members)} listed in {len(members) // 100 + (len(members) % 100 > 0)} pages"
      f" ({len(members) - len(limited)} unlimited)")
print("User types        " + ", ".join(f"{k} {v}" for k, v in sorted(types.items(), key=lambda kv: -kv[1])))
print(f"Below 10 % left   {len(critical)}   (the notebook's rule, skipping unlimited members)")
print(f"Below 50 % left   {len(warning)}")
print()
print(f"{'member':<28}{'assigned':>10}{'available':>12}")
for m in sorted(critical, key=lambda m: m["availableCredits"] / max(m["assignedCredits"], 1e-9))[:10]:
    print(f"{m['username']:<28}{m['assignedCredits']:>10.2f}{m['availableCredits']:>12.2f}")
counts = json.load(urllib.request.urlopen(f"{BASE}/_sim/counts"))
print()
print("Requests served   " + ", ".join(f"{k} {v}" for k, v in counts.items()))
