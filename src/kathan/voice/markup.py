"""Markup removal for voice output: reasoning blocks, code fences, inline markdown, emoji.

Two stages. `ThinkFilter` and `FenceFilter` work on the raw delta stream and drop whole
blocks that must never reach the TTS engine; they only hold back the few characters that
might still turn into a tag or a fence. `strip_inline` then cleans one complete piece of
text (a sentence or a few) cut by `kathan.voice.chunker.SentenceChunker`, keeping the words
and dropping the markdown around them.
"""

from __future__ import annotations

import html
import re

__all__ = ["FenceFilter", "ThinkFilter", "strip_inline"]

_THINK_NAMES = ("think", "thinking", "reasoning")
# Opening or closing tag, e.g. `<think>`, `</Reasoning >`. A stray closing tag outside a
# block is dropped too (some templates open the block in the prompt). A tag right after a
# backtick is quoted code ("use the `<think>` tag"), not a block.
_TAG = re.compile(r"(?<!`)<(/?)(?:think|thinking|reasoning)\s*>", re.IGNORECASE)
_CLOSE_TAG = re.compile(r"(?<!`)</(?:think|thinking|reasoning)\s*>", re.IGNORECASE)


def _partial_tag_len(buf: str) -> int:
    """Length of the tail of `buf` that could still grow into a think tag."""
    i = buf.rfind("<")
    if i < 0:
        return 0
    body = buf[i + 1 :].lower().removeprefix("/")
    name = body.rstrip()
    if name != body:  # whitespace may only follow a complete name: `<think  >`
        return len(buf) - i if name in _THINK_NAMES else 0
    return len(buf) - i if any(n.startswith(name) for n in _THINK_NAMES) else 0


class ThinkFilter:
    """Streaming removal of `<think>`, `<thinking>` and `<reasoning>` blocks.

    Tags are matched case-insensitively; an unclosed block runs to the end of the stream.
    `feed` returns the text that is safe to pass on now and holds back a tail that could
    still be a tag (`"<thi"`); `flush` returns what is left at the end of the stream.
    The concatenated output never depends on where the deltas were split.

    >>> f = ThinkFilter()
    >>> f.feed("Sure.<thi") + f.feed("nk>hmm</think> Here") + f.flush()
    'Sure. Here'
    """

    def __init__(self) -> None:
        self._before = ""  # the stream's character just before _buf (for the backtick rule)
        self._buf = ""
        self._inside = False

    def feed(self, text: str) -> str:
        ctx = self._before + self._buf + text
        pos = len(self._before)
        out: list[str] = []
        while True:
            m = (_CLOSE_TAG if self._inside else _TAG).search(ctx, pos)
            if m is None:
                keep = len(ctx) - _partial_tag_len(ctx[pos:])
                if not self._inside:  # inside, everything but a possible tag is dropped
                    out.append(ctx[pos:keep])
                break
            if not self._inside:
                out.append(ctx[pos : m.start()])
            pos = m.end()
            self._inside = not self._inside and not m.group(1)
        self._before = ctx[keep - 1] if keep else ""
        self._buf = ctx[keep:]
        return "".join(out)

    def flush(self) -> str:
        # A held tail outside a block was not a tag after all; inside one it is dropped.
        rest = "" if self._inside else self._buf
        self._before = self._buf = ""
        self._inside = False
        return rest


# A fence opener at a line start: any indentation (fences inside list items are indented),
# then three or more backticks or tildes; the rest of the line is the info string.
_FENCE_RUN = re.compile(r"[ \t]*(`{3,}|~{3,})")
_FENCE_PREFIX = re.compile(r"[ \t]*(?:`{0,2}|~{0,2})")
_FENCE_CLOSE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*\r?")
_FENCE_MAYBE_CLOSE = re.compile(r"[ \t]*(?:`*|~*)[ \t]*\r?")


class FenceFilter:
    """Streaming removal of fenced code blocks (```` ``` ```` or ``~~~``, any info string).

    Fences are recognised at line starts only (inline ```` ``` ```` is left to
    `strip_inline`); the block ends at a line holding a fence of the same character that is
    at least as long, or at the end of the stream. Same `feed`/`flush` contract as
    `ThinkFilter`: partial fences at a line start are held back.

    >>> f = FenceFilter()
    >>> f.feed("Run:\\n``") + f.feed("`py\\nprint(1)\\n```\\nDone.") + f.flush()
    'Run:\\nDone.'
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._buf = ""
        self._line_start = True
        self._fence = ""  # the opening run while inside a block, e.g. "```"
        self._skip_line = False  # dropping the rest of a line inside or opening a block

    def feed(self, text: str) -> str:
        self._buf += text
        return self._run(final=False)

    def flush(self) -> str:
        out = self._run(final=True)
        if not self._fence and not self._skip_line:
            out += self._buf
        self._reset()
        return out

    def _run(self, final: bool) -> str:
        out: list[str] = []
        buf = self._buf
        while buf:
            if self._skip_line:
                nl = buf.find("\n")
                if nl < 0:
                    buf = ""
                    break
                buf = buf[nl + 1 :]
                self._skip_line = False
                self._line_start = True
                continue
            if self._fence:
                nl = buf.find("\n")
                if nl < 0:
                    if not _FENCE_MAYBE_CLOSE.fullmatch(buf) or final:
                        buf = ""
                        self._skip_line = True
                    break
                m = _FENCE_CLOSE.fullmatch(buf, 0, nl)
                run = m.group(1) if m else ""
                if run[:1] == self._fence[0] and len(run) >= len(self._fence):
                    self._fence = ""
                buf = buf[nl + 1 :]
                self._line_start = True
                continue
            if self._line_start:
                m = _FENCE_RUN.match(buf)
                if m is not None:
                    if m.end() == len(buf) and not final:
                        break  # the run may still grow: ``` versus ````
                    nl = buf.find("\n", m.end())
                    if m.group(1)[0] == "`":
                        # A backtick fence's info string has no backtick; with one the
                        # line is inline code (```x```), so wait for the whole line.
                        if nl < 0 and not final:
                            break
                        info = buf[m.end() : nl if nl >= 0 else len(buf)]
                        is_fence = "`" not in info
                    else:
                        is_fence = True
                    if is_fence:
                        self._fence = m.group(1)
                        self._skip_line = True
                        buf = buf[m.end() :]
                        continue
                elif _FENCE_PREFIX.fullmatch(buf) and not final:
                    break  # "  ``" may still become a fence
            nl = buf.find("\n")
            if nl < 0:
                out.append(buf)
                buf = ""
                self._line_start = False
                break
            out.append(buf[: nl + 1])
            buf = buf[nl + 1 :]
            self._line_start = True
        self._buf = buf
        return "".join(out)


# --- inline markdown --------------------------------------------------------------------

# Emoji: pictographic blocks, dingbats, regional indicators (flags), skin tones and tag
# characters, each run swallowing its joiners and variation selectors (ZWJ sequences).
# ZWJ elsewhere is kept: Devanagari uses it for half forms.
_EMOJI_CHARS = (
    "\U0001f000-\U0001faff"  # mahjong .. symbols & pictographs ext-A, flags, skin tones
    "\u2600-\u2775\u2794-\u27bf"  # misc symbols, dingbats (not the circled digits)
    "\u231a\u231b\u2328\u23cf\u23e9-\u23f3\u23f8-\u23fa"
    "\u2b05-\u2b07\u2b1b\u2b1c\u2b50\u2b55\u2934\u2935\u3030\u303d\u3297\u3299"
    "\u2139\u24c2\u25aa\u25ab\u25b6\u25c0\u25fb-\u25fe\u2194-\u2199\u21a9\u21aa"
    "\U000e0020-\U000e007f"
)
_EMOJI = re.compile(
    rf"(?:[0-9#*]\ufe0f?\u20e3|[{_EMOJI_CHARS}])"
    rf"(?:[{_EMOJI_CHARS}\u200d\ufe0e\ufe0f\u20e3]|[0-9#*]\ufe0f?\u20e3)*[\ufe0e\ufe0f]?"
)
_VARIATION = re.compile("[\ufe0e\ufe0f]")

_HR = re.compile(r"(?:[-*_][ \t]*){3,}|=+")
_TABLE_SEP = re.compile(r"[\s|:\-]*\|[\s|:\-]*")
_PREFIX = re.compile(
    r"[ \t]*(?:>[ \t]?)*[ \t]*"
    # A bullet, a number, or both ("- **1. Title**": a number inside emphasis too).
    r"(?:(#{1,6})[ \t]+|(?=[-*+•‣◦▪_\d])(?:[-*+•‣◦▪][ \t]+)?"
    r"(?:(?:\*\*|__)?\d{1,3}[.)][ \t]+)?(?:\[[ xX]\][ \t]+)?)?"
)
_HEADING_TAIL = re.compile(r"[ \t]+#+[ \t]*$")
_CODE = re.compile(r"(`+)(.+?)\1")
_CODE_SLOT = re.compile("\ue000(\\d+)\ue001")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)\s]*(?:\s+\"[^\"]*\")?\)")
_LINK = re.compile(r"\[([^\]]+)\](?:\([^)\s]*(?:\s+\"[^\"]*\")?\)|\[[^\]]*\])")
_FOOTNOTE = re.compile(r"\[\^[^\]]+\]")
_AUTOLINK = re.compile(r"<(?:mailto:)?((?:https?|ftp)://[^>\s]+|[^>\s@]+@[^>\s@]+)>")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_HTML_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9-]*)(?:\s[^<>]*)?/?>")
# Formatting tags vanish; any other tag (<br>, <p>, <li>) separates words.
_INLINE_TAGS = frozenset({
    "a", "abbr", "b", "bdi", "bdo", "cite", "code", "del", "dfn", "em", "i", "ins", "kbd",
    "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup", "time", "u", "var",
})
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*")
_UBOLD = re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)")
_EM = re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])")
_UEM = re.compile(r"(?<!\w)_(?=[^\s_])(.+?)(?<=[^\s_])_(?!\w)")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
# Markers left over when an emphasis spans a piece boundary ("**Note." / "This** is"):
# a run touching a word on one side only. `2 * 3` and snake_case are left alone.
_ORPHAN_STAR = re.compile(r"(?<!\S)\*+(?=\S)|(?<=\S)\*+(?!\S)")
_ORPHAN_UNDER = re.compile(r"(?<!\w)_+(?=\w)|(?<=\w)_+(?!\w)")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!>~|])")
_SPACE_BEFORE = re.compile(r"[ \t]+([.,!?…])(?=\s|$)")
_SPACE_BEFORE_FR = re.compile(r"[ \t]+([.,…])(?=\s|$)")  # French keeps `mot !`
_ENDS_PAUSE = frozenset(".?!…।॥:;,—")
_CLOSERS = "\"')]}”’»*_"


def _html_tag(m: re.Match[str]) -> str:
    return "" if m.group(1).lower() in _INLINE_TAGS else " "


def _strip_line(line: str, codes: list[str]) -> str:
    """One line of markdown to plain text; code span contents go to `codes`."""
    if _HR.fullmatch(line.strip()) or (
        "|" in line and "-" in line and _TABLE_SEP.fullmatch(line)
    ):
        return ""
    m = _PREFIX.match(line)
    if m is not None and m.end():
        line = line[m.end() :]
        if m.group(1):
            line = _HEADING_TAIL.sub("", line)
    line = line.strip()
    if line.startswith("|"):  # table row: cells become a list
        line = ", ".join(c.strip() for c in line.strip("|").split("|") if c.strip())
    # Code span contents and escaped characters are set aside so that no later rule
    # touches them, and put back at the very end.
    if "`" in line:

        def keep_code(m: re.Match[str]) -> str:
            codes.append(" ".join(m.group(2).split()))
            return f"\ue000{len(codes) - 1}\ue001"

        line = _CODE.sub(keep_code, line).replace("`", "")
    if "\\" in line:

        def keep_char(m: re.Match[str]) -> str:
            codes.append(m.group(1))
            return f"\ue000{len(codes) - 1}\ue001"

        line = _ESCAPE.sub(keep_char, line)
    if "[" in line:
        line = _LINK.sub(r"\1", _IMAGE.sub(r"\1", _FOOTNOTE.sub("", line)))
    if "<" in line:
        line = _AUTOLINK.sub(r"\1", line)
        line = _HTML_TAG.sub(_html_tag, _HTML_COMMENT.sub("", line))
    if "&" in line:
        line = html.unescape(line)
    if "*" in line:
        line = _ORPHAN_STAR.sub("", _EM.sub(r"\1", _BOLD.sub(r"\1", line)))
    if "_" in line:
        line = _ORPHAN_UNDER.sub("", _UEM.sub(r"\1", _UBOLD.sub(r"\1", line)))
    if "~" in line:
        line = _STRIKE.sub(r"\1", line).replace("~~", "")
    return line


def strip_inline(text: str, locale: str = "en-US") -> str:
    """Plain speakable text from one complete piece of markdown.

    Keeps the words of emphasis, strike-through, code spans, links (`[text](url)` → text),
    images (→ alt text) and autolinks (`<https://x.org>` → the URL); drops headings,
    blockquote marks, list bullets, table pipes and separator rows, horizontal rules,
    HTML tags and all emoji. Each line that ends with a line break becomes a sentence: it
    gets a `.` (`।` for hi-IN) unless it already ends with punctuation, then lines are
    joined with spaces and whitespace is collapsed. Lines without a letter or digit (only
    emoji or symbols) vanish. Underscores inside words (snake_case, e-mail addresses) stay.

    >>> strip_inline("## Steps\\n- **Mix** the `flour` 🎉\\n- Bake", "en-US")
    'Steps. Mix the flour. Bake'
    """
    text = _EMOJI.sub(" ", text)
    codes: list[str] = []
    lines = text.split("\n")
    stop = "।" if locale.lower().startswith("hi") else "."
    out: list[str] = []
    for i, raw in enumerate(lines):
        line = _strip_line(raw, codes)
        if not any(ch.isalnum() for ch in line):
            continue
        if i < len(lines) - 1:  # the line ended with a line break: make it a sentence
            tail = line.rstrip(_CLOSERS + " \t\r") or line
            if tail[-1] not in _ENDS_PAUSE:
                line += stop
        out.append(line)
    result = " ".join(" ".join(out).split())
    if codes:
        result = _CODE_SLOT.sub(lambda m: codes[int(m.group(1))], result)
    sub = _SPACE_BEFORE_FR if locale.lower().startswith("fr") else _SPACE_BEFORE
    return sub.sub(r"\1", _VARIATION.sub("", result))
