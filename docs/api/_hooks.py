"""mkdocs hooks of the documentation site (`make docs`).

1. Links that leave ``docs/`` for a file of the repository (``../examples/...``) cannot be
   followed on the site: they are checked (a target that does not exist fails the strict
   build) and written as the path in the source tree. A link to a folder of ``docs/`` goes to
   the folder's ``README.md`` or ``index.md``; a folder without one is a broken link.
2. The docstrings use Sphinx roles (:func:`name`, :class:`name`, :math:`a^2`, ...). Markdown
   turns the backquoted part into ``<code>`` and leaves the role's name in front of it; the
   role's name is dropped, and an invdiff name links to its API entry when that entry exists
   (an optional cross-reference of mkdocs-autorefs: no warning when it does not).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.invdiff")

_LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\(([^)\s]+)\)")
_ROLE = re.compile(r":(?:py:)?(func|class|meth|mod|attr|data|exc|obj|const|math|ref|term|doc):"
                   r"<code>(.*?)</code>", re.S)
_LINKABLE = {"func", "class", "meth", "mod", "attr", "data", "exc", "obj", "const"}


def _fix_link(match: re.Match, page_dir: Path, docs: Path, repo: Path, where: str) -> str:
    text, target = match.group(1), match.group(2)
    if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
        return match.group(0)
    path, _, anchor = target.partition("#")
    resolved = Path(os.path.normpath(page_dir / path))  # lexical: symbolic links kept
    if not resolved.is_relative_to(docs):
        if not resolved.exists():
            log.warning("Doc file '%s' links to '%s', which does not exist", where, target)
            return match.group(0)
        rel = resolved.relative_to(repo).as_posix() + ("/" if resolved.is_dir() else "")
        return text if text.strip("`") == rel else f"{text} (`{rel}` in the source tree)"
    if resolved.is_dir():
        for index in ("README.md", "index.md"):
            if (resolved / index).exists():
                new = path.rstrip("/") + "/" + index + (f"#{anchor}" if anchor else "")
                return f"[{text}]({new})"
    return match.group(0)


def on_page_markdown(markdown: str, page, config, files) -> str:
    docs = Path(os.path.abspath(config["docs_dir"]))
    repo = Path(os.path.abspath(config["config_file_path"])).parent
    page_dir = (docs / page.file.src_path).parent
    # leave fenced code alone
    out, in_code = [], False
    chunks = re.split(r"(^```.*$|^~~~.*$)", markdown, flags=re.M)
    for chunk in chunks:
        if re.match(r"^(```|~~~)", chunk):
            in_code = not in_code
            out.append(chunk)
        elif in_code:
            out.append(chunk)
        else:
            out.append(_LINK.sub(lambda m: _fix_link(m, page_dir, docs, repo,
                                                     page.file.src_path), chunk))
    return "".join(out)


def _replace_role(match: re.Match) -> str:
    role, text = match.group(1), match.group(2)
    target = re.sub(r"\s+", "", text).lstrip("~.").replace("()", "")
    if role in _LINKABLE and target.startswith("invdiff"):
        return f'<autoref identifier="{target}" optional><code>{text}</code></autoref>'
    return f"<code>{text}</code>"


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub(_replace_role, html)
