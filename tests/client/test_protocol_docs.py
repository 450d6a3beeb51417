"""PROTOCOL.md says what the wire does (issue #11.15, the OPS part): reviving a ``failed``
session with ``session.open`` is documented, and the documented answer is what the core gives."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import trio

from geminid.daemon.fake import FakeOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "session"))
from session_harness import TEXT_SETUP, open_core  # noqa: E402

PROTOCOL = Path(__file__).resolve().parents[2] / "protocol" / "PROTOCOL.md"


def section(title_start: str) -> str:
    text = PROTOCOL.read_text()
    m = re.search(rf"(?ms)^### `{re.escape(title_start)}.*?(?=^### )", text)
    assert m, title_start
    return m.group(0)


def test_session_open_documents_reviving_a_failed_session():
    doc = section("session.open")
    assert "`failed`" in doc and "revive" in doc.lower()
    assert '"created": false, "restored": false' in doc and "-32005" in doc


async def test_open_on_a_failed_session_revives_it_as_documented(tmp_path):
    async with open_core(tmp_path / "state", fake_options=FakeOptions(api_key="right"), key="wrong") as core:
        rec = await core.open("s")
        await rec.wait(lambda r: "failed" in r.statuses())
        with trio.fail_after(10):  # "failed" until its actor has wound down, then revived
            while (result := await core.registry.open("s", TEXT_SETUP)).status == "failed":
                await trio.sleep(0.01)
        assert (result.created, result.restored, result.status) == (False, False, "connecting")
        await rec.wait(lambda r: r.statuses().count("failed") == 2)  # the key is still wrong
        assert core.fake.dials == 2
