"""label_model / score_model input messages rendered as Chat Completions messages."""

from __future__ import annotations

from distillery.evals.graders.base import GradeInput, sample_from_output
from distillery.evals.graders.messages import InputMessage, render_messages, with_instruction

INP = GradeInput(
    item={"url": "https://example.com/a.png", "q": "質問"}, sample=sample_from_output("答え")
)


def test_text_image_and_roles() -> None:
    messages = [
        InputMessage(role="developer", content="Judge {{item.q}}"),
        InputMessage(
            role="user",
            content=[
                {"type": "input_text", "text": "Answer: {{sample.output_text}}"},
                {"type": "input_image", "image_url": "{{item.url}}", "detail": "low"},
            ],
        ),
        InputMessage(
            role="assistant", content={"type": "output_text", "text": "ok"}, type="message"
        ),
    ]
    assert render_messages(messages, INP) == [
        {"role": "system", "content": "Judge 質問"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Answer: 答え"},
                {
                    "type": "image_url",
                    "image_url": {"url": "https://example.com/a.png", "detail": "low"},
                },
            ],
        },
        {"role": "assistant", "content": "ok"},
    ]


def test_instruction_is_appended_to_last_user_message_or_added() -> None:
    user_last = [{"role": "user", "content": "x"}]
    assert with_instruction(user_last, "FORMAT") == [{"role": "user", "content": "x\n\nFORMAT"}]
    assert user_last == [{"role": "user", "content": "x"}]  # not mutated
    parts = [{"role": "user", "content": [{"type": "text", "text": "x"}]}]
    assert with_instruction(parts, "F")[0]["content"][-1] == {"type": "text", "text": "F"}
    assistant_last = [{"role": "assistant", "content": "x"}]
    assert with_instruction(assistant_last, "F")[-1] == {"role": "user", "content": "F"}
