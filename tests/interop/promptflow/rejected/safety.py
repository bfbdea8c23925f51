from promptflow.core import tool


@tool
def safety(text: str) -> bool:
    return "attack" not in text
