from promptflow import tool


@tool
def format_reply(billing: str | None = None, shipping: str | None = None) -> str:
    return (billing or shipping or "").strip()
