"""A chat model's prompt: the conversation written out with the model's own chat template (the Jinja
template stored in its weights file), so that the model sees turns exactly as it saw them in training.
Used in chapter 8.
"""

from __future__ import annotations

ROLES = ("system", "user", "assistant")


def check_messages(messages) -> list[dict]:
    """One-line errors for a conversation that is not a non-empty list of ``{"role", "content"}`` dicts
    with a role from :data:`ROLES` and text content."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got {messages!r:.60}")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise ValueError(f"messages[{index}]['role'] must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(message.get("content"), str):
            raise ValueError(f"messages[{index}]['content'] must be a string, got {message.get('content')!r:.40}")
    return messages


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """``messages`` written out by the Jinja ``template``; with ``add_generation_prompt`` the text ends
    where the assistant's next turn begins."""
    import jinja2

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return environment.from_string(template).render(messages=check_messages(messages),
                                                    add_generation_prompt=add_generation_prompt)
