import json

from promptflow.core import tool


@tool
def parse_label(reply: str, default_label: str, max_reason_words: int) -> dict:
    try:
        data = json.loads(reply)
    except ValueError:
        return {"label": default_label, "reason": ""}
    reason = " ".join(str(data.get("reason", "")).split()[:max_reason_words])
    return {"label": data.get("label", default_label), "reason": reason}
