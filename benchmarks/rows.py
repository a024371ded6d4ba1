"""A benchmark result row: a measured value beside a peer's, and whether it meets its target."""


def row(name, value, unit, peer=None, peer_value=None, target=None, note=None, lower_is_better=False):
    """A result row; `target` bounds the ratio (or the value itself when `lower_is_better`)."""
    ratio = value / peer_value if peer_value else None
    if target is None:
        met = None
    elif lower_is_better:
        met = value <= target
    else:
        met = None if ratio is None else ratio >= target
    out = {"name": name, "value": value, "unit": unit, "peer": peer, "peer_value": peer_value,
           "ratio": ratio, "target": target, "met": met}
    if note:
        out["note"] = note
    return out
