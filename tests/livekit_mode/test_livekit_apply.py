"""``byeline livekit apply`` with the real livekit-api client, against byeline's LiveKit API.

byeline (built in process) stands in for the deployment here: it serves the same SIP
methods. The plan is printed before anything changes, ``--dry-run`` changes nothing, a second
apply changes nothing, and an edited file is an update showing the fields that differ.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from pathlib import Path

from e2e_harness import BYELINE, TRUNK
from livekit.protocol import sip as lk_sip
from livekit_harness import API_KEY, API_SECRET, LiveKitApp

from byeline.livekit.apply import run_apply

RULE = {
    "dispatch_rule": {
        "name": "Five9 to voice agent",
        "trunk_ids": [],
        "rule": {"dispatch_rule_individual": {"room_prefix": "five9"}},
        "attributes": {"five9.entry": "ivr"},
        "room_config": {"agents": [{"agent_name": "five9-router"}]},
    }
}


async def apply(served: LiveKitApp, trunk: Path, rule: Path, *, dry_run: bool) -> str:
    out = io.StringIO()
    await run_apply(
        url=served.url,
        api_key=API_KEY,
        api_secret=API_SECRET,
        trunk_path=trunk,
        dispatch_path=rule,
        dry_run=dry_run,
        out=out,
    )
    return out.getvalue()


async def test_apply_is_shown_first_and_idempotent(lk_app: LiveKitApp, tmp_path: Path) -> None:
    trunk = tmp_path / "trunk.json"
    trunk.write_text(TRUNK.read_text("utf-8"), "utf-8")
    rule = tmp_path / "dispatch.json"
    # The rule names the trunk by the id byeline serve gives the file: apply translates it.
    from byeline.edge.trunk import load_trunk

    file_trunk_id = load_trunk(trunk).id
    rule.write_text(
        json.dumps({"dispatch_rule": {**RULE["dispatch_rule"], "trunk_ids": [file_trunk_id]}}),
        "utf-8",
    )
    lkapi = lk_app.lkapi

    shown = await apply(lk_app, trunk, rule, dry_run=True)
    assert "trunk 'Five9 e2e': create" in shown
    assert '+ numbers: ["+18005550100"]' in shown
    assert "dispatch rule 'Five9 to voice agent': create" in shown
    assert "dry run: 2 change(s) not applied" in shown
    listed = await lkapi.sip.list_inbound_trunk(lk_sip.ListSIPInboundTrunkRequest())
    assert [t.name for t in listed.items] == ["Five9 from another data center"]

    done = await apply(lk_app, trunk, rule, dry_run=False)
    assert "created trunk 'Five9 e2e': ST_" in done, done
    listed = await lkapi.sip.list_inbound_trunk(lk_sip.ListSIPInboundTrunkRequest())
    made = next(t for t in listed.items if t.name == "Five9 e2e")
    [made_rule] = (await lkapi.sip.list_dispatch_rule(lk_sip.ListSIPDispatchRuleRequest())).items
    assert list(made_rule.trunk_ids) == [made.sip_trunk_id]

    again = await apply(lk_app, trunk, rule, dry_run=False)
    assert f"trunk 'Five9 e2e': unchanged ({made.sip_trunk_id})" in again
    assert "dispatch rule 'Five9 to voice agent': unchanged" in again
    assert "nothing to change" in again

    data = json.loads(trunk.read_text("utf-8"))
    data["trunk"]["numbers"] = ["+18005550100", "+18005550101"]
    data["trunk"]["auth_username"] = "five9"
    data["trunk"]["auth_password"] = "s3cret-never-shown"
    trunk.write_text(json.dumps(data), "utf-8")
    changed = await apply(lk_app, trunk, rule, dry_run=False)
    assert f"trunk 'Five9 e2e': update ({made.sip_trunk_id})" in changed
    assert '~ numbers: ["+18005550100"] → ["+18005550100", "+18005550101"]' in changed
    assert "+ auth_password: (hidden)" in changed and "s3cret" not in changed
    listed = await lkapi.sip.list_inbound_trunk(lk_sip.ListSIPInboundTrunkRequest())
    updated = next(t for t in listed.items if t.name == "Five9 e2e")
    assert updated.sip_trunk_id == made.sip_trunk_id
    assert list(updated.numbers) == ["+18005550100", "+18005550101"]


async def test_apply_cli_dry_run(lk_app: LiveKitApp, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LIVEKIT_URL": lk_app.url,
        "LIVEKIT_API_KEY": API_KEY,
        "LIVEKIT_API_SECRET": API_SECRET,
    }
    proc = await asyncio.create_subprocess_exec(
        str(BYELINE),
        "livekit",
        "apply",
        "--trunk",
        str(TRUNK),
        "--dry-run",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "trunk 'Five9 e2e': create" in out.decode()
    assert "dry run: 1 change(s) not applied" in out.decode()
