"""Runs the original notebook's code cells with Esri's own `arcgis` client against portal-sim,
then holds the notebook's results against what credit-steward computes on the same org.

Why: the simulator stands in for ArcGIS Online in every test. Esri's client is the most
demanding judge of whether it is faithful: it probes, scrapes the sign-in page, hydrates
users and items and polls report status the way it does against the real service. If a cell
fails, the simulator lacks (or gets wrong) what the client asked for.

The cells run verbatim, twice, each time on a freshly reset simulator:
  1. "verbatim": exactly as written (only `GIS("home")` becomes `GIS(url, user, password)`).
     On arcgis 2.x `"admin" in gis.__dict__` is always False, so the credit cells only print
     "Please connect ... as an administrator" and the lists stay empty.
  2. "admin-guard": the same cells; after sign-in the harness (not a cell) puts `admin` into
     `gis.__dict__` so the guard is true. `gis.admin` still goes to the class's property.

Then run 2's results (org credits, credits per operation type, the two lists, the allocations)
are compared with `fidelity-steward`'s JSON; every difference must be explained by a known
notebook bug, computed from the data. Unexplained differences make the exit code non-zero.

Usage (scripts/fidelity.sh does this):
  FIDELITY_PASSWORD=... python run_notebook.py --notebook seed-notebook.txt --url https://127.0.0.1:PORT \
      --user steward_admin --steward steward.json --out-dir target/fidelity
The password is read from the environment and never printed; neither are tokens.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import re
import signal
import ssl
import sys
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

EXPECTED_CELLS = 14
CELL_MARKER = "In [None]:"
# The only change made to the notebook's code: sign in with a username and password.
HOME_LOGIN = 'GIS("home")'
HARNESS_LOGIN = "GIS(__fidelity_url, __fidelity_user, __fidelity_password)"
# No cell may run longer than this: `User.report` polls without a deadline of its own.
CELL_TIMEOUT_S = 180

SECRET_KEYS = ("token", "password", "access_token", "refresh_token", "client_secret", "code")


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


def _parses(src: str) -> bool:
    try:
        ast.parse(src)
    except SyntaxError:
        return False
    return True


def extract_cells(text: str) -> list[str]:
    """The code after each `In [None]:` marker, up to the notebook's next markdown paragraph.

    Cells contain blank lines (a function followed by a commented-out call), so a cell is the
    longest run of blank-line-separated paragraphs that still parses as Python, stopping at a
    markdown heading (`## ...`, which would also parse, as a comment) or the next marker.
    """
    cells = []
    for chunk in text.split(CELL_MARKER)[1:]:
        # Paragraph spans (start, end) within the chunk, split at blank lines.
        spans, pos = [], 0
        for sep in re.finditer(r"\n[ \t]*\n", chunk):
            if chunk[pos : sep.start()].strip():
                spans.append((pos, sep.start()))
            pos = sep.end()
        if chunk[pos:].strip():
            spans.append((pos, len(chunk)))
        end = None
        for i, (a, b) in enumerate(spans):
            if re.match(r"#{2,}\s", chunk[a:b].lstrip()):
                break
            if _parses(chunk[spans[0][0] : b]):
                end = b
        cells.append(chunk[spans[0][0] : end].strip("\n").rstrip() if spans and end else "")
    return cells


def check_cells(cells: list[str], text: str) -> None:
    """Refuses to run anything but the notebook's 14 cells, each a verbatim excerpt of it."""
    if len(cells) != EXPECTED_CELLS:
        raise SystemExit(f"fidelity: expected {EXPECTED_CELLS} code cells in the notebook, found {len(cells)}")
    for i, cell in enumerate(cells, 1):
        if not cell.strip():
            raise SystemExit(f"fidelity: cell {i} is empty: the extraction is wrong")
        if cell not in text:
            raise SystemExit(f"fidelity: cell {i} is not a verbatim excerpt of the notebook")
        if not _parses(cell):
            raise SystemExit(f"fidelity: cell {i} does not parse as Python: the extraction is wrong")
    if sum(HOME_LOGIN in c for c in cells) != 1:
        raise SystemExit(f"fidelity: expected exactly one {HOME_LOGIN} in the cells")


# --------------------------------------------------------------------------------------------
# Redaction and the HTTP exchange recorder
# --------------------------------------------------------------------------------------------


class Redactor:
    """Removes secrets from anything the harness prints: the password itself, tokens in URLs,
    form bodies, JSON bodies, fragments and the `X-Esri-Authorization` header."""

    def __init__(self, secrets: list[str]):
        self.secrets = [s for s in secrets if s]
        keys = "|".join(SECRET_KEYS)
        self.pairs = re.compile(rf"(?i)\b({keys}|oauth_state)=([^&#\s'\"]+)")
        # JSON and Python reprs alike, and a value cut off by a truncated body (no closing quote).
        self.json = re.compile(rf"""(?i)(["'])({keys}|oauth_state)\1\s*:\s*["'][^"']*["']?""")
        self.bearer = re.compile(r"(?i)(bearer\s+)[^\s'\"]+")
        self.issued = re.compile(rf"""(?i)["']?(?:{keys}|oauth_state)["']?\s*[:=]\s*["']?([A-Za-z0-9._~+/-]{{8,}})""")

    def learn(self, text: str) -> None:
        """Remembers every token-like value an answer carries (a body, a redirect's fragment),
        so it is hidden wherever it shows up later, whatever surrounds it."""
        for value in self.issued.findall(str(text)):
            if value not in self.secrets:
                self.secrets.append(value)

    def __call__(self, text: str) -> str:
        text = str(text)
        for s in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(s, "[redacted]")
        text = self.pairs.sub(r"\1=[redacted]", text)
        text = self.json.sub(r'"\2": "[redacted]"', text)
        return self.bearer.sub(r"\1[redacted]", text)


@dataclass
class Exchange:
    """One HTTP request Esri's client made and the simulator's answer (redacted later)."""

    method: str
    url: str
    body: str
    status: int | None
    location: str
    answer: str


@dataclass
class Recorder:
    """Wraps requests' transport so every exchange of the client is kept, for reporting the
    request a failing cell made and what the simulator answered."""

    exchanges: list[Exchange] = field(default_factory=list)
    redact: Redactor | None = None

    def install(self) -> None:
        import requests.adapters

        original = requests.adapters.HTTPAdapter.send
        recorder = self

        def send(adapter, request, *args, **kwargs):
            body = request.body if isinstance(request.body, str) else (request.body or b"")
            if isinstance(body, bytes):
                body = body[:600].decode("utf-8", "replace")
            try:
                response = original(adapter, request, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - recorded, then re-raised unchanged
                recorder.exchanges.append(Exchange(request.method, request.url, body, None, "", f"{type(e).__name__}: {e}"))
                raise
            if recorder.redact is not None:
                # Before truncation: a token cut in half could no longer be recognised.
                recorder.redact.learn(response.headers.get("Location", ""))
                if "csv" not in response.headers.get("Content-Type", ""):
                    recorder.redact.learn(response.content.decode("utf-8", "replace"))
            ctype = response.headers.get("Content-Type", "")
            # Reading .content here is safe: requests would read it anyway (no streaming use).
            answer = response.content[:600].decode("utf-8", "replace") if "csv" not in ctype else f"<{ctype}, {len(response.content)} bytes>"
            recorder.exchanges.append(
                Exchange(request.method, request.url, body, response.status_code, response.headers.get("Location", ""), answer)
            )
            return response

        requests.adapters.HTTPAdapter.send = send


def is_error_answer(x: Exchange) -> bool:
    return x.status is None or x.status >= 400 or x.answer.lstrip().startswith('{"error"')


# --------------------------------------------------------------------------------------------
# Running the cells
# --------------------------------------------------------------------------------------------


@dataclass
class CellResult:
    index: int
    ran: bool
    output: str
    error: str = ""
    requests: int = 0
    error_answers: int = 0
    failing_exchange: Exchange | None = None
    seconds: float = 0.0


class CellTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise CellTimeout(f"the cell ran longer than {CELL_TIMEOUT_S} s")


def run_cell(source: str, ns: dict) -> None:
    """Runs a cell as a notebook does: the value of a final bare expression is displayed."""
    tree = ast.parse(source)
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body = tree.body[:-1]
    exec(compile(tree, "<cell>", "exec"), ns)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), ns)
        if value is not None:
            print(repr(value))


def run_notebook(cells, mode, url, user, password, recorder: Recorder, redact: Redactor):
    """Runs every cell in a fresh namespace; returns the results and the namespace."""
    ns: dict = {"__name__": "__main__", "__fidelity_url": url, "__fidelity_user": user, "__fidelity_password": password}
    results = []
    signal.signal(signal.SIGALRM, _on_alarm)
    for i, cell in enumerate(cells, 1):
        source = cell.replace(HOME_LOGIN, HARNESS_LOGIN)
        before = len(recorder.exchanges)
        out = io.StringIO()
        started = time.monotonic()
        signal.alarm(CELL_TIMEOUT_S)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                run_cell(source, ns)
            ok, err = True, ""
        except Exception as e:  # noqa: BLE001 - every failure is reported with its request
            ok = False
            err = f"{type(e).__name__}: {e}".strip()
            tb = traceback.format_exc(limit=-3)
            out.write("\n" + tb)
        finally:
            signal.alarm(0)
        seconds = time.monotonic() - started
        mine = recorder.exchanges[before:]
        errors = [x for x in mine if is_error_answer(x)]
        failing = (errors[-1] if errors else (mine[-1] if mine else None)) if not ok else None
        results.append(
            CellResult(i, ok, redact(out.getvalue()), redact(err), len(mine), len(errors), failing, seconds)
        )
        if i == 1 and ok and mode == "admin-guard":
            # The harness, not a cell, makes the notebook's guard true. `admin` is a property
            # of the class, so `gis.admin` still answers; only `"admin" in gis.__dict__` changes.
            ns["gis"].__dict__["admin"] = True
        if i == 1 and ok:
            ns["__fidelity_guard"] = "admin" in ns["gis"].__dict__
    return results, ns


# --------------------------------------------------------------------------------------------
# The simulator's control API (loopback only)
# --------------------------------------------------------------------------------------------


class Control:
    def __init__(self, base: str, ca_file: str):
        self.base = base.rstrip("/")
        self.ctx = ssl.create_default_context(cafile=ca_file)

    def call(self, method: str, path: str):
        req = urllib.request.Request(self.base + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
            return json.loads(r.read().decode())

    def reset(self):
        self.call("POST", "/_sim/reset")

    def state(self):
        return {m["username"]: m for m in self.call("GET", "/_sim/state")["members"]}


# --------------------------------------------------------------------------------------------
# Comparison with credit-steward
# --------------------------------------------------------------------------------------------

ORG_LINE = re.compile(r"This ArcGIS Online organization has (\S+) credits\.")
LIST_LINE = re.compile(
    r"l'utilisateur (\S+) sont inférieurs à (10|50)% des crédits assignés \((\S+)/(\S+) crédits consommés - (\S+) crédits restants\)"
)


@dataclass
class Findings:
    explained: dict[str, list[str]] = field(default_factory=dict)
    unexplained: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Members whose list difference a known bug explains (their top-up follows from it).
    explained_members: set[str] = field(default_factory=set)

    def bug(self, name: str, detail: str, member: str | None = None) -> None:
        # Both runs see the same report: count each difference once.
        details = self.explained.setdefault(name, [])
        if detail not in details:
            details.append(detail)
        if member is not None:
            self.explained_members.add(member)


def dec(x) -> Fraction:
    return Fraction(Decimal(str(x)))


def member_reason(m: dict) -> tuple[str, str] | None:
    """A known notebook bug that puts this member on a list credit-steward leaves it off."""
    if m is None:
        return None
    if m["disabled"]:
        return "disabled members are listed and topped up", m["username"]
    if m["viewer"]:
        return "viewers (who cannot spend credits) are listed and topped up", m["username"]
    if m["balance"]["kind"] == "unlimited":
        return "unlimited (-1) is handled as a number", m["username"]
    return None


def first_hit(gis, username: str, cache: dict) -> str | None:
    """What the notebook's `gis.users.search(username)[0]` returns (read-only, after the run)."""
    if username not in cache:
        hits = gis.users.search(username)
        cache[username] = hits[0].username if hits else None
    return cache[username]


def compare(run: dict, steward: dict, findings: Findings, gis) -> None:
    members = {m["username"]: m for m in steward["members"]}
    ns, out = run["ns"], run["stdout"]
    searches: dict = {}

    # Org credits.
    m = ORG_LINE.search(out)
    if not run["guard"]:
        findings.bug(
            '"admin" in gis.__dict__ is always False on arcgis 2.x',
            f"run {run['mode']}: the credit cells printed 'Please connect ... as an administrator' and the lists stayed empty",
        )
    elif m is None:
        findings.unexplained.append(f"run {run['mode']}: the org credits line was not printed")
    elif abs(float(m.group(1)) - float(steward["org_credits"])) > 1e-6:
        findings.unexplained.append(f"org credits: notebook {m.group(1)}, credit-steward {steward['org_credits']}")

    # Credits per operation type.
    df = ns.get("credits_report_df")
    if df is None:
        findings.unexplained.append(f"run {run['mode']}: credits_report_df was not computed")
    else:
        nb = {str(k): float(v) for k, v in zip(df["index"], df["Total"])}
        st = {s["service"]: float(s["credits"]) for s in steward["by_service"]}
        total_row = run["csv_has_total_row"]
        for service in sorted(set(nb) | set(st)):
            a, b = nb.get(service), st.get(service)
            if a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b)):
                continue
            if a is not None and b is not None and total_row and abs(a - 2 * b) <= 1e-6 * max(1.0, abs(b)):
                findings.bug("a trailing Total row doubles the per-operation totals", service)
            else:
                findings.unexplained.append(f"credits for {service!r}: notebook {a}, credit-steward {b}")

    if not run["guard"]:
        return

    # The two lists.
    printed = {u: (lvl, Fraction(Decimal(ass)), Fraction(Decimal(av))) for u, lvl, _c, ass, av in LIST_LINE.findall(out)}
    listed = {getattr(u, "username", u) for u in ns.get("utilisateurs", [])}
    for nb_name, st_name in (("liste_10", "critical"), ("liste_50", "warning")):
        nb_list, st_list = set(ns.get(nb_name, [])), set(steward[st_name])
        for u in sorted(nb_list - st_list):
            explain_extra(u, nb_name, st_name, members, printed, steward, findings, gis, searches)
        for u in sorted(st_list - nb_list):
            explain_missing(u, nb_name, st_name, members, listed, steward, findings, gis, searches)

    # Allocations: the notebook sets 200 for each member of liste_10; credit-steward tops the
    # critical members up to 200 available.
    planned = {a["username"]: a for a in steward["allocations"] if a["target"] is not None}
    after = run["state_after"]
    for u in sorted(set(ns.get("liste_10", []))):
        s = after.get(u)
        if s is None:
            findings.unexplained.append(f"allocation: {u} is not a member after the run")
            continue
        if s["allocation"] != 200:
            findings.unexplained.append(f"allocation: the notebook's allocate({u}, 200) left the allocation at {s['allocation']}")
            continue
        p = planned.get(u)
        if p is None:
            # credit-steward changes nothing for it: a member the list comparison already
            # attributed to a known bug, or a critical member already holding 200 or more,
            # whose allocation the notebook's "set to 200" lowers.
            if u in findings.explained_members:
                continue
            if u in steward["critical"]:
                left = Decimal(str(s["available_credits"]))
                findings.bug(
                    "allocate(u, 200) sets the allocation, it does not add",
                    f"{u}: credit-steward leaves it as it is; the notebook's allocate({u}, 200) leaves {left} available",
                    member=u,
                )
            else:
                findings.unexplained.append(f"allocation: the notebook topped up {u}, which credit-steward would not")
            continue
        if abs(float(p["target"]) - 200) > 1e-9:
            consumed = Decimal(str(p["target"])) - 200
            left = Decimal(str(s["available_credits"]))
            negative = " (negative)" if left < 0 else ""
            findings.bug(
                "allocate(u, 200) sets the allocation, it does not add",
                f"{u}: {consumed} consumed, the notebook leaves {left} available{negative}; credit-steward sets {p['target']} so that 200 are",
            )


def explain_extra(u, nb_name, st_name, members, printed, steward, findings, gis, searches):
    """`u` is on the notebook's list but not on credit-steward's."""
    m = members.get(u)
    hit = first_hit(gis, u, searches)
    if hit is not None and hit != u:
        findings.bug("users.search(username)[0] is a fuzzy search: the first hit is judged", f"{u} → {hit} ({nb_name})", member=u)
        return
    reason = member_reason(m)
    if reason:
        findings.bug(reason[0], f"{u} ({nb_name})", member=u)
        return
    if m and m["balance"]["kind"] == "limited" and nb_name == "liste_10" and u in steward["warning"]:
        ass, av = dec(m["balance"]["assigned"]), dec(m["balance"]["available"])
        if av * 10 == ass and float(av) < 0.10 * float(ass):
            findings.bug("float rounding flags exactly 10 % left as below 10 %", f"{u} ({float(av):g}/{float(ass):g})", member=u)
            return
    findings.unexplained.append(f"{u} is in the notebook's {nb_name} but not in credit-steward's {st_name}")


def explain_missing(u, nb_name, st_name, members, listed, steward, findings, gis, searches):
    """`u` is on credit-steward's list but not on the notebook's."""
    if len(listed) >= 1000 and u not in listed:
        findings.bug("search(max_users=1000) silently truncates the member list", u, member=u)
        return
    hit = first_hit(gis, u, searches)
    if hit is None:
        findings.bug("the bare except hides a member the search did not find", u, member=u)
        return
    if hit != u:
        findings.bug("users.search(username)[0] is a fuzzy search: the first hit is judged", f"{u} → {hit} (missing from {nb_name})", member=u)
        return
    m = members.get(u)
    if m and st_name == "warning" and m["balance"]["kind"] == "limited":
        ass, av = dec(m["balance"]["assigned"]), dec(m["balance"]["available"])
        if av * 10 == ass and float(av) < 0.10 * float(ass):
            findings.bug("float rounding flags exactly 10 % left as below 10 %", f"{u} ({float(av):g}/{float(ass):g})", member=u)
            return
    findings.unexplained.append(f"{u} is in credit-steward's {st_name} but not in the notebook's {nb_name}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def describe_failure(r: CellResult, redact: Redactor) -> str:
    x = r.failing_exchange
    if x is None:
        return f"{r.error} (no request was made)"
    req = f"{x.method} {x.url}" + (f" body {x.body}" if x.body else "")
    ans = f"HTTP {x.status}" + (f" Location {x.location}" if x.location else "") + f": {x.answer.strip()[:300]}"
    return redact(f"{r.error}; request: {req}; simulator's answer: {ans}")


def first_line(text: str) -> str:
    for line in text.splitlines():
        # Library deprecation warnings are not the cell's output.
        if line.strip() and "Warning:" not in line and "warnings.warn" not in line:
            return line.strip()[:110]
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--notebook", required=True)
    ap.add_argument("--url", required=True, help="the portal URL, e.g. https://127.0.0.1:PORT")
    ap.add_argument("--user", required=True)
    ap.add_argument("--steward", required=True, help="fidelity-steward's JSON for the same org")
    ap.add_argument("--ca-file", required=True, help="the simulator's self-signed certificate")
    ap.add_argument("--out-dir", required=True, help="where full cell transcripts go")
    args = ap.parse_args()
    password = os.environ.get("FIDELITY_PASSWORD", "")
    if not password:
        print("fidelity: set FIDELITY_PASSWORD to the account's password", file=sys.stderr)
        return 2
    redact = Redactor([password])
    with open(args.notebook, encoding="utf-8") as f:
        text = f.read()
    cells = extract_cells(text)
    check_cells(cells, text)
    with open(args.steward, encoding="utf-8") as f:
        steward = json.load(f)
    os.makedirs(args.out_dir, exist_ok=True)

    recorder = Recorder(redact=redact)
    recorder.install()
    control = Control(args.url, args.ca_file)
    runs = []
    for mode in ("verbatim", "admin-guard"):
        control.reset()
        results, ns = run_notebook(cells, mode, args.url, args.user, password, recorder, redact)
        csv_path = ns.get("file1")
        total_row = False
        if isinstance(csv_path, str) and os.path.exists(csv_path):
            with open(csv_path, encoding="utf-8") as f:
                total_row = any(line.split(",", 1)[0].strip('"') == "Total" for line in f)
        runs.append(
            {
                "mode": mode,
                "results": results,
                "ns": ns,
                "guard": ns.get("__fidelity_guard", False),
                "stdout": "\n".join(r.output for r in results),
                "csv_has_total_row": total_row,
                "state_after": control.state(),
            }
        )
        with open(os.path.join(args.out_dir, f"run-{mode}.txt"), "w", encoding="utf-8") as f:
            for r in results:
                f.write(f"===== cell {r.index}: {'ran' if r.ran else 'FAILED'} ({r.requests} requests, {r.seconds:.1f} s)\n")
                f.write(cells[r.index - 1] + "\n----- output\n" + r.output + "\n")

    failures = []
    for run in runs:
        for r in run["results"]:
            status = "ran   " if r.ran else "FAILED"
            note = f", {r.error_answers} error answers" if r.error_answers else ""
            print(f"  [{run['mode']:<11}] cell {r.index:>2} {status} ({r.requests:>3} requests{note}, {r.seconds:5.1f} s)  {first_line(cells[r.index - 1])}")
            shown = first_line(r.output)
            if shown:
                print(f"  {'':<13}        ↳ {shown}")
            if not r.ran:
                failures.append((run["mode"], r))
                print(f"  {'':<13}        ✗ {describe_failure(r, redact)}")

    ran = min(sum(r.ran for r in run["results"]) for run in runs)
    if failures:
        mode, r = failures[0]
        print(f"fidelity: {ran}/{EXPECTED_CELLS} notebook cells ran against portal-sim; cell {r.index} ({mode} run) failed: {describe_failure(r, redact)}")
        return 1

    findings = Findings()
    gis = runs[1]["ns"]["gis"]
    for run in runs:
        compare(run, steward, findings, gis)
    print("comparison with credit-steward (run admin-guard; run verbatim for the guard):")
    for bug, details in findings.explained.items():
        shown = "; ".join(details[:6]) + (f"; … {len(details) - 6} more" if len(details) > 6 else "")
        print(f"  explained by '{bug}': {len(details)} difference(s): {shown}")
    for u in findings.unexplained:
        print(f"  UNEXPLAINED: {u}")
    bugs = "; ".join(findings.explained) or "nothing"
    line = f"fidelity: {EXPECTED_CELLS}/{EXPECTED_CELLS} notebook cells ran against portal-sim; results agree with credit-steward except: {bugs}"
    if findings.unexplained:
        line += f"; and {len(findings.unexplained)} UNEXPLAINED difference(s) (listed above)"
    print(redact(line))
    return 1 if findings.unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
