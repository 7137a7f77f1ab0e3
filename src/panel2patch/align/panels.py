"""Pair detected panels with caption subcaptions, and detected marker patches with marker phrases.

``align_panels(panels, subcaptions)``

* ``panels``: ``[{"index": int (reading order), "label": str | None, ...}]`` as the layout stage
  gives them; ``label`` is the printed letter as read ("a", "(B)", "b1", "ii") or None.
* ``subcaptions``: the dict of :func:`panel2patch.text.split.split_caption`.
* Returns one dict per panel (in ``index`` order), then one per subcaption nobody took::

    {"panel_index": 3 | None, "key": "C" | None, "text": "<subcaption> <shared>" | None,
     "method": "letter" | "order" | "none", "confidence": 0.0-1.0, "reason": str | None}

  ``text`` is the whole description of the panel: the panel's own subcaption, then the shared
  text (own words first, so that right truncation by a text encoder keeps them).  Matching: by letter first (case-insensitive, brackets ignored, roman numerals,
  "b1" -> B with lower confidence); when no panel letter matches but the number of panels equals
  the number of subcaptions, by reading order; panels left without a letter are also filled by
  reading order when exactly as many subcaptions are left.  A figure whose caption has no panel
  keys gives its single panel the shared text (method "order"); several panels get "none".

``align_patches(patches, markers)``

* ``patches``: ``[{"index": int, "panel_label": str | None, "type": "arrow", "colour": "red" | None}]``
* ``markers``: the list of :func:`panel2patch.text.markers.find_marker_phrases`.
* Returns one dict per patch, then one per marker phrase that no patch took::

    {"patch_index": int | None, "marker_index": int | None, "phrase": str | None,
     "score": float, "paired": bool, "reason": str | None}

  A patch pairs with the best-scoring marker phrase of the same type (arrowhead / arrow count as
  compatible at a lower score) whose labels include the patch's panel (a phrase without labels
  fits any panel, at a lower score) and whose colour does not contradict the patch's.  A phrase
  with ``count == 1`` takes one patch; plural phrases take any number.
"""

from __future__ import annotations

import re

__all__ = ["align_panels", "align_patches", "normalise_label"]

_ROMAN = {"i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv",
          "xvi", "xvii", "xviii", "xix", "xx"}
_ROMAN_ORDER = ["i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii", "xiii", "xiv", "xv",
                "xvi", "xvii", "xviii", "xix", "xx"]
_POS_ORDER = ["top", "top-left", "top-middle", "top-right", "middle", "left", "middle-left", "middle-right",
              "right", "bottom", "bottom-left", "bottom-middle", "bottom-right"]
_CIRCLED = {chr(0x24B6 + i): chr(ord("A") + i) for i in range(26)}
_CIRCLED.update({chr(0x24D0 + i): chr(ord("A") + i) for i in range(26)})


def _key_order(key: str):
    if key in _ROMAN:
        return (1, _ROMAN_ORDER.index(key))
    if len(key) == 1:
        return (0, ord(key.upper()))
    return (2, _POS_ORDER.index(key) if key in _POS_ORDER else 99, key)


def normalise_label(label, roman: bool = False):
    """Printed panel label -> (key, exact): '(a)' -> ('A', True); 'b1' -> ('B', False);
    'ii' -> ('ii', True) when the caption is numbered in roman numerals; junk -> (None, False)."""
    if label is None:
        return None, False
    s = str(label).strip()
    s = "".join(_CIRCLED.get(ch, ch) for ch in s)
    s = s.strip("()[]{}.:,; \t")
    if not s:
        return None, False
    if roman and s.lower() in _ROMAN:
        return s.lower(), True
    if len(s) == 1 and s.isalpha():
        return s.upper(), True
    m = re.fullmatch(r"([A-Za-z])(?:\d+|['′]+|[ivx]{1,4})", s)
    if m:
        return m.group(1).upper(), False
    if s.lower() in _ROMAN:
        return s.lower(), True
    return None, False


def _full_text(subcaptions: dict, key: str) -> str:
    """The panel's own subcaption first, then the shared text: a text encoder truncating on the
    right (77 tokens) keeps the words that tell panels apart."""
    shared = (subcaptions.get("_shared") or "").strip()
    own = (subcaptions.get(key) or "").strip()
    return (own + " " + shared).strip() if own else shared


def align_panels(panels: list, subcaptions: dict) -> list:
    subcaptions = subcaptions or {}
    keys = sorted((k for k in subcaptions if k != "_shared"), key=_key_order)
    roman = bool(keys) and all(k in _ROMAN for k in keys)
    ordered = sorted(panels or [], key=lambda p: p.get("index", 0))
    result: dict = {}

    if not keys:
        shared = (subcaptions.get("_shared") or "").strip() or None
        for p in ordered:
            if len(ordered) == 1:
                result[p["index"]] = _pair(p["index"], None, shared, "order", 0.9 if shared else 0.0,
                                           "single panel takes the whole caption" if shared else "empty caption")
            else:
                result[p["index"]] = _pair(p["index"], None, None, "none", 0.0,
                                           "caption names no panels; only shared text")
        return [result[p["index"]] for p in ordered]

    # 1. by printed letter
    by_key: dict = {}
    norm: dict = {}
    for p in ordered:
        key, exact = normalise_label(p.get("label"), roman=roman)
        norm[p["index"]] = (key, exact)
        if key is not None:
            by_key.setdefault(key, []).append(p["index"])
    taken: set = set()
    for key, idxs in by_key.items():
        if key not in subcaptions or key == "_shared":
            continue
        for idx in idxs:
            exact = norm[idx][1]
            conf = 1.0 if exact else 0.85
            reason = None if exact else f"label {ordered_label(ordered, idx)!r} read as {key}"
            if len(idxs) > 1:
                conf = min(conf, 0.7)
                reason = f"{len(idxs)} panels carry label {key}"
            result[idx] = _pair(idx, key, _full_text(subcaptions, key), "letter", conf, reason)
        taken.add(key)

    # 2. by reading order: all panels when no letter matched, else the unlabelled gap
    free_panels = [p["index"] for p in ordered if p["index"] not in result]
    free_keys = [k for k in keys if k not in taken]
    if free_panels and free_keys:
        if not taken and len(free_panels) == len(keys):
            for idx, key in zip(free_panels, keys):
                result[idx] = _pair(idx, key, _full_text(subcaptions, key), "order", 0.6,
                                    f"no readable panel letters; {len(keys)} panels and {len(keys)} subcaptions")
            free_panels, free_keys = [], []
        elif taken and len(free_panels) == len(free_keys) and all(norm[i][0] is None for i in free_panels):
            if _order_consistent(ordered, result, free_panels, free_keys):
                for idx, key in zip(free_panels, free_keys):
                    result[idx] = _pair(idx, key, _full_text(subcaptions, key), "order", 0.5,
                                        "letter not read; filled by reading order between matched letters")
                free_panels, free_keys = [], []

    for idx in free_panels:
        key, _ = norm[idx]
        label = ordered_label(ordered, idx)
        if label is None:
            why = f"no readable label; {len(free_panels)} panel(s) and {len(free_keys)} subcaption(s) left"
        elif key is None:
            why = f"label {label!r} is not a panel letter"
        else:
            why = f"label {label!r} not in caption"
        result[idx] = _pair(idx, None, None, "none", 0.0, why)
    out = [result[p["index"]] for p in ordered]
    for key in free_keys:
        out.append(_pair(None, key, _full_text(subcaptions, key), "none", 0.0, f"no panel labelled {key}"))
    return out


def ordered_label(ordered: list, idx: int):
    for p in ordered:
        if p["index"] == idx:
            return p.get("label")
    return None


def _order_consistent(ordered: list, result: dict, free_panels: list, free_keys: list) -> bool:
    """Gap filling only when the free panels sit where their letters would be in reading order."""
    seq = []
    for p in ordered:
        idx = p["index"]
        if idx in result:
            seq.append(result[idx]["key"])
        elif idx in free_panels:
            seq.append(free_keys[free_panels.index(idx)])
    keyed = [k for k in seq if k is not None]
    return keyed == sorted(keyed, key=_key_order)


def _pair(panel_index, key, text, method, confidence, reason):
    return {"panel_index": panel_index, "key": key, "text": text, "method": method,
            "confidence": round(float(confidence), 3), "reason": reason}


# ------------------------------------------------------------------------------------------------
# patches <-> marker phrases

_COMPATIBLE = {("arrow", "arrowhead"), ("arrowhead", "arrow"), ("star", "asterisk"), ("asterisk", "star"),
               ("box", "inset"), ("inset", "box")}


def _norm_colour(c):
    if not isinstance(c, str) or not c:  # None, or a table's missing value (NaN)
        return None
    c = str(c).strip().lower().replace("gray", "grey")
    return c or None


def _score(patch: dict, marker: dict, patch_key) -> tuple:
    pt, mt = (patch.get("type") or "").lower(), (marker.get("type") or "").lower()
    if pt == mt:
        s = 0.5
    elif (pt, mt) in _COMPATIBLE:
        s = 0.2
    else:
        return None, f"type {pt} vs {mt}"
    labels = [str(x).upper() if len(str(x)) == 1 else str(x) for x in marker.get("labels") or []]
    if labels:
        if patch_key is None:
            s += 0.05
        elif patch_key in labels:
            s += 0.3
        else:
            return None, f"phrase is about panel(s) {','.join(labels)}"
    else:
        s += 0.1
    pc, mc = _norm_colour(patch.get("colour")), _norm_colour(marker.get("colour"))
    if pc and mc:
        if pc != mc:
            return None, f"colour {pc} vs {mc}"
        s += 0.2
    return round(s, 3), None


def align_patches(patches: list, markers: list) -> list:
    patches = list(patches or [])
    markers = list(markers or [])
    cands = []
    for pi, p in enumerate(patches):
        key, _ = normalise_label(p.get("panel_label"))
        if key is None and p.get("panel_label"):
            key = str(p.get("panel_label")).strip().lower() or None
        for mi, m in enumerate(markers):
            sc, _why = _score(p, m, key)
            if sc is not None:
                cands.append((sc, pi, mi))
    # best score first; ties: the earlier phrase, the earlier patch
    cands.sort(key=lambda c: (-c[0], c[2], c[1]))
    capacity = {mi: (1 if m.get("count") == 1 else None) for mi, m in enumerate(markers)}
    used_by: dict = {mi: 0 for mi in range(len(markers))}
    chosen: dict = {}
    for sc, pi, mi in cands:
        if pi in chosen:
            continue
        cap = capacity[mi]
        if cap is not None and used_by[mi] >= cap:
            continue
        chosen[pi] = (mi, sc)
        used_by[mi] += 1
    out = []
    for pi, p in enumerate(patches):
        if pi in chosen:
            mi, sc = chosen[pi]
            m = markers[mi]
            reason = None
            if (p.get("type") or "").lower() != (m.get("type") or "").lower():
                reason = f"type {p.get('type')} paired with a {m.get('type')} phrase"
            elif not m.get("labels"):
                reason = "phrase names no panel"
            out.append({"patch_index": p.get("index", pi), "marker_index": mi, "phrase": m.get("phrase"),
                        "score": sc, "paired": True, "reason": reason})
        else:
            key, _ = normalise_label(p.get("panel_label"))
            verdicts = [_score(p, m, key) for m in markers]
            if not markers:
                why = "no marker phrase in the caption"
            elif any(sc is not None for sc, _ in verdicts):
                why = "matching phrases already taken"
            else:
                first = next((w for _, w in verdicts if w), "")
                why = "no phrase of a matching type, panel and colour" + (f" ({first})" if first else "")
            out.append({"patch_index": p.get("index", pi), "marker_index": None, "phrase": None,
                        "score": 0.0, "paired": False, "reason": why})
    for mi, m in enumerate(markers):
        if used_by[mi] == 0:
            out.append({"patch_index": None, "marker_index": mi, "phrase": m.get("phrase"), "score": 0.0,
                        "paired": False, "reason": f"no detected {m.get('type')} patch"
                        + (f" in panel {','.join(m['labels'])}" if m.get("labels") else "")})
    return out
