#!/usr/bin/env bash
# `make run` after the installs: set up, build the agent image when this code has none (with
# progress, not the raw build log), print one short block (the URL, the web chat password, what
# to do next), then serve in the foreground. BIN is the virtualenv's bin directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}

echo "nanohost: setting up. The first run builds the agent image (Debian packages, Codex CLI):"
echo "that takes a few minutes; later runs reuse it and start at once."
setup=$("$BIN/nanohost" setup --json)

ready_block() {  # $1: what setup printed (JSON); $2: "built" or "failed"
  "$BIN/python" - "$1" "$2" "$BIN" <<'PY'
import json
import sys

from nanohost.cli import PASSWORD_NOTE, _web_address
from nanohost.settings import load_settings

setup, state, bin_dir = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
password = setup.get("web_password")
if state == "failed":  # the password is shown once: never lose it to a failed build
    if password:
        print(f"web chat password: {password}  {PASSWORD_NOTE}")
    sys.exit(0)
nanohost = f"{bin_dir}/nanohost"
steps = [(f"{nanohost} doctor", "check everything the host needs")]
if any("mock" in note for note in setup.get("notes", [])):
    steps.append(
        (f"OPENAI_API_KEY=… {nanohost} groups config main --provider codex", "a real agent")
    )
steps += [
    (f"{nanohost} --help", "groups, chats (Telegram, Slack, Discord), skills"),
    ("make test", "run every test"),
]
print()
print("nanohost is ready")
print(f"  web chat  http://{_web_address(load_settings())}/")
if password:
    print(f"  password  {password}  {PASSWORD_NOTE}")
else:
    print(f"  password  the one shown at the first run (`{nanohost} web password` sets a new one)")
for index, (command, why) in enumerate(steps):
    print(f"  {'next' if index == 0 else '':8}  {command}   # {why}")
print()
print("starting the host (Ctrl-C stops it)")
PY
}

if ! "$BIN/nanohost" image build --if-missing; then
  ready_block "$setup" failed
  exit 1
fi
ready_block "$setup" built
exec "$BIN/nanohost" serve
