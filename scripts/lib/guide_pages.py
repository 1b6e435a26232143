#!/usr/bin/env python3
"""Copies README.md and docs/**/*.md into a folder Doxygen reads as the guide's pages.

The pages are written for GitHub, whose heading anchors Doxygen 1.9 does not make. Each copy gets
explicit ids instead ({#page-anchor}, unique across pages), links to a heading become Doxygen
references, and links to source files point from the HTML folder back into the repository.
Usage: guide_pages.py REPO OUT HTML_DIR
"""
import os
import re
import sys

FENCE = re.compile(r"^\s*```")
HEADING = re.compile(r"^(#{1,6}) (.*)$")
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def anchor(text):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    out = []
    for c in text.lower():
        if c.isalnum() or c in "-_" or ord(c) >= 0x80:
            out.append(c)
        elif c == " ":
            out.append("-")
    return "".join(out)


def page_id(rel):
    return re.sub(r"[^A-Za-z0-9]+", "_", os.path.splitext(rel)[0]).strip("_").lower()


def rewrite_links(line, rel, html_to_repo):
    here = os.path.dirname(rel)

    def one(m):
        bang, text, target = m.groups()
        if re.match(r"^[a-z]+:", target):
            return m.group(0)
        if bang:  # Doxygen finds an image by its path under IMAGE_PATH (docs/)
            return f"![{text}]({os.path.relpath(os.path.normpath(os.path.join(here, target)), 'docs')})"
        path, _, frag = target.partition("#")
        dest = os.path.normpath(os.path.join(here, path)) if path else rel
        if dest.endswith(".md"):
            if frag:
                return f"[{text}](@ref {page_id(dest)}-{frag})"
            return f"[{text}](@ref {page_id(dest)})"
        return f"[{text}]({html_to_repo}/{dest})"

    # A link may show a `code span`, but one that starts inside a span is not a link.
    spans = [m.span() for m in re.finditer(r"`[^`]*`", line)]
    return LINK.sub(lambda m: m.group(0) if any(a < m.start() < b for a, b in spans) else one(m), line)


def convert(src, rel, html_to_repo):
    pid = page_id(rel)
    seen = {}
    out = []
    in_code = False
    first = True
    with open(src, encoding="utf-8") as f:
        for line in f.read().split("\n"):
            if FENCE.match(line):
                in_code = not in_code
            if in_code:
                out.append(line)
                continue
            m = HEADING.match(line)
            if m:
                base = anchor(m.group(2))
                n = seen.get(base, 0)
                seen[base] = n + 1
                label = pid if first else f"{pid}-{base if n == 0 else f'{base}-{n}'}"
                first = False
                line = f"{m.group(1)} {rewrite_links(m.group(2), rel, html_to_repo)} {{#{label}}}"
            else:
                line = rewrite_links(line, rel, html_to_repo)
            out.append(line)
    return "\n".join(out)


def main():
    repo, out_dir, html_dir = sys.argv[1:4]
    html_to_repo = os.path.relpath(repo, html_dir)
    pages = ["README.md"]
    for root, _, files in os.walk(os.path.join(repo, "docs")):
        pages += [os.path.relpath(os.path.join(root, f), repo) for f in files if f.endswith(".md")]
    for rel in sorted(pages):
        dest = os.path.join(out_dir, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w", encoding="utf-8") as f:
            f.write(convert(os.path.join(repo, rel), rel, html_to_repo))
    print(f"guide: {len(pages)} pages")


if __name__ == "__main__":
    main()
