"""Packages built bootstraps into a release an infrastructure team deploys without Rust.

    release-package.py BUILD_DIR OUT_DIR          # zips + SHA256SUMS + template.yaml + samconfig.toml
    release-package.py --template-only OUT_DIR    # the packaged template only (what CI validates)
    release-package.py --functions                # "LogicalId package" per function, for scripts

BUILD_DIR is `sam build`'s output (one folder per function's logical id, each with its
`bootstrap`). The packaged template is infra/template.yaml with each function's CodeUri
pointing at its zip next to it and the cargo-lambda build metadata removed, so `sam deploy`
(or `aws cloudformation package` + `deploy`) uploads the zips as they are.
"""

import hashlib
import os
import re
import shutil
import sys
import zipfile

# Logical id -> package, as in the template.
FUNCTIONS = {
    "ScanCreditsFunction": "scan-credits",
    "AllocateFunction": "allocate",
    "AllocationJobsFunction": "allocation-jobs",
    "MonthlyReportFunction": "monthly-report",
}
# Zip entries get a fixed time, so the same bootstrap gives the same zip and checksum.
EPOCH = (2026, 1, 1, 0, 0, 0)


def package_template(source, out):
    with open(source, encoding="utf-8") as f:
        text = f.read()
    for package in FUNCTIONS.values():
        before = f"CodeUri: ../functions/{package}\n"
        if text.count(before) != 1:
            sys.exit(f"release: expected one '{before.strip()}' in {source}")
        text = text.replace(before, f"CodeUri: {package}.zip\n")
    text, removed = re.subn(r"\n +BuildMethod: rust-cargolambda(?=\n)", "", text)
    if removed != len(FUNCTIONS):
        sys.exit(f"release: removed {removed} BuildMethod lines, expected {len(FUNCTIONS)}")
    # A Metadata block left empty by the removal would be invalid YAML for SAM.
    if re.search(r"\n +Metadata:\n +Properties:", text):
        sys.exit("release: a function's Metadata is empty after removing BuildMethod")
    leftover = [m for m in ("../functions", "BuildMethod") if m in text]
    if leftover:
        sys.exit(f"release: the packaged template still mentions {leftover}")
    with open(os.path.join(out, "template.yaml"), "w", encoding="utf-8") as f:
        f.write(text)


def zip_bootstrap(bootstrap, target):
    info = zipfile.ZipInfo("bootstrap", date_time=EPOCH)
    info.external_attr = 0o100755 << 16  # a regular, executable file
    info.compress_type = zipfile.ZIP_DEFLATED
    with open(bootstrap, "rb") as f:
        data = f.read()
    with zipfile.ZipFile(target, "w") as z:
        z.writestr(info, data, compresslevel=9)


def main(argv):
    if argv[1:] == ["--functions"]:
        for logical_id, package in FUNCTIONS.items():
            print(logical_id, package)
        return
    if len(argv) == 3 and argv[1] == "--template-only":
        out = argv[2]
        os.makedirs(out, exist_ok=True)
        package_template("infra/template.yaml", out)
        return
    if len(argv) != 3:
        sys.exit(__doc__)
    build, out = argv[1], argv[2]
    os.makedirs(out, exist_ok=True)
    sums = []
    for logical_id, package in FUNCTIONS.items():
        bootstrap = os.path.join(build, logical_id, "bootstrap")
        if not os.path.isfile(bootstrap):
            sys.exit(f"release: {bootstrap} is missing: run the build first")
        target = os.path.join(out, f"{package}.zip")
        zip_bootstrap(bootstrap, target)
        with open(target, "rb") as f:
            sums.append(f"{hashlib.sha256(f.read()).hexdigest()}  {package}.zip\n")
    with open(os.path.join(out, "SHA256SUMS"), "w", encoding="utf-8") as f:
        f.writelines(sums)
    package_template("infra/template.yaml", out)
    shutil.copy("infra/samconfig.toml", os.path.join(out, "samconfig.toml"))


if __name__ == "__main__":
    main(sys.argv)
