"""How answers become Slack text and blocks (the sink's pure parts)."""

from __future__ import annotations

from koalabot_adapters.slack.sink import SECTION_CHARS, answer_blocks, escape


def test_model_output_cannot_ping_the_channel() -> None:
    assert escape("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;"


def test_final_blocks_fit_slack_limits_even_when_escaping_grows_the_text() -> None:
    text = escape("a < b\n" * 900)  # 5400 characters raw, 8100 escaped
    blocks = [b.to_dict() for b in answer_blocks(text, 7)]

    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(s) <= SECTION_CHARS for s in sections)
    assert "\n".join(sections).rstrip("\n") == text.rstrip("\n")
    assert all(not s.startswith(("lt;", "t;", ";")) for s in sections)  # entities stay whole
    buttons = blocks[-1]["elements"]
    assert [b["value"] for b in buttons] == ["7", "7", "7"]
    assert [b["text"]["text"] for b in buttons] == ["👍", "👎", "🔄 Regenerate"]
