"""MkDocs hooks: the pages that are generated or taken from the repository, not copied.

- The API reference, one page for `jconstrain` and one per public submodule, generated
  from `jconstrain.__all__` and each submodule's `__all__`, so every public name has a
  section and a new name gets one without editing the docs.
- The notebooks (`notebooks/*.ipynb`) and benchmark plots (`benchmarks/results/*.png`),
  added to the site from where they live; mkdocs-jupyter renders the notebooks from their
  stored outputs (`execute: false`).
- README sections, included by a line `<!-- readme: Heading -->` in a page, so the README
  stays the one source of the solver table, the contract, the statuses and the benchmarks;
  a whole file of the repository by `<!-- file: PATH -->` (the changelog).

Everything is read from the repository the mkdocs.yml sits in, so a fresh clone builds.
A reference to a README heading, a notebook or a public name that does not exist raises,
which fails the build.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import types
from pathlib import Path

import mkdocs.plugins
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "jconstrain"

# Reading order of the top-level page; names of `__all__` not listed here follow, sorted.
TOP_ORDER = [
    "solve", "Problem", "Solution", "Status", "Multipliers", "Stats",
    "SQP", "AugmentedLagrangian", "Penalty", "ProjectedGradient", "AbstractSolver",
    "projected", "fold", "newton",
]


def _module():
    return importlib.import_module(PACKAGE)


def public_submodules() -> list[str]:
    """The public submodules: the modules named in `jconstrain.__all__`."""
    jc = _module()
    return [n for n in jc.__all__ if isinstance(getattr(jc, n), types.ModuleType)]


def public_names(module: str) -> list[str]:
    """`module`'s public names: its `__all__`, else the names not starting with `_`."""
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n in vars(mod) if not n.startswith("_")
                 and not isinstance(getattr(mod, n), types.ModuleType)]
    return list(names)


def reference_pages() -> dict[str, list[str]]:
    """Page path -> the public names (dotted, e.g. `jconstrain.qp.solve`) it documents."""
    jc = _module()
    subs = public_submodules()
    top = [n for n in jc.__all__ if n not in subs]
    top = [n for n in TOP_ORDER if n in top] + sorted(n for n in top if n not in TOP_ORDER)
    pages = {"reference/index.md": [f"{PACKAGE}.{n}" for n in top]}
    for s in subs:
        pages[f"reference/{s}.md"] = [f"{PACKAGE}.{s}.{n}" for n in public_names(f"{PACKAGE}.{s}")]
    return pages


def implementation_path(name: str) -> str:
    """Where griffe finds the object behind the public name `name`.

    Usually the name itself (griffe follows the import). Where a package re-exports a
    function under the name of its own submodule (`jconstrain.solve` while the function
    lives in a module `solve`), griffe sees the submodule, so the function's defining
    path is used instead; the page still shows and anchors the public name.
    """
    mod, _, attr = name.rpartition(".")
    obj = getattr(importlib.import_module(mod), attr)
    if isinstance(obj, types.ModuleType) or not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return name
    if isinstance(sys.modules.get(name), types.ModuleType):  # a submodule of that name
        return f"{obj.__module__}.{obj.__qualname__}"
    return name


def _page_markdown(path: str, names: list[str]) -> str:
    if path == "reference/index.md":
        lines = [
            f"# `{PACKAGE}`", "",
            f"Every name in `{PACKAGE}.__all__` (`import {PACKAGE} as jc`). Submodules: "
            + ", ".join(f"[`jc.{s}`]({s}.md)" for s in public_submodules()) + ".", "",
        ]
    else:
        mod = names[0].rpartition(".")[0] if names else f"{PACKAGE}.{Path(path).stem}"
        doc = inspect.getdoc(importlib.import_module(mod)) or ""
        lines = [f"# `{mod}`", "", doc, ""]
    for name in names:
        impl = implementation_path(name)
        opts = ""
        if impl != name:
            short = name.rpartition(".")[2]
            opts = f'\n    options:\n      heading: "{name}"\n      toc_label: "{short}"'
        # The section's HTML id is the public name (mkdocstrings gives aliases theirs).
        lines += [f'<a id="{name}"></a>' if impl != name else "", "", f"::: {impl}{opts}", ""]
    return "\n".join(lines)


def notebook_paths() -> list[str]:
    """The notebooks, quickstart first, then by name."""
    nbs = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    nbs.sort(key=lambda n: n != "quickstart.ipynb")
    return [f"notebooks/{n}" for n in nbs]


def _fill_nav(nav, title, entries):
    for item in nav:
        if isinstance(item, dict) and title in item:
            item[title] = entries
            return
    raise ValueError(f"mkdocs.yml nav has no '{title}' section to fill")


def on_config(config):
    """Fill the nav's Reference and Notebooks sections with the generated lists."""
    nav = config["nav"]
    ref = []
    for path in reference_pages():
        stem = Path(path).stem
        ref.append({(f"{PACKAGE}" if stem == "index" else f"jc.{stem}"): path})
    _fill_nav(nav, "Reference", ref)
    _fill_nav(nav, "Notebooks", notebook_paths())
    return config


@mkdocs.plugins.event_priority(100)  # before mkdocs-jupyter wraps the notebooks
def on_files(files, config):
    for path, names in reference_pages().items():
        files.append(File.generated(config, path, content=_page_markdown(path, names)))
    for path in notebook_paths() + [f"benchmarks/results/{p.name}"
                                    for p in sorted((ROOT / "benchmarks/results").glob("*.png"))]:
        files.append(File(path, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


_README_MARK = re.compile(r"^<!-- readme: (.+?) -->$", re.MULTILINE)
_FILE_MARK = re.compile(r"^<!-- file: (.+?) -->$", re.MULTILINE)


def readme_section(heading: str) -> str:
    """The body of the README's `## heading` section (without the heading line)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if m is None:
        raise ValueError(f"README.md has no section '## {heading}'")
    return m.group(1).strip() + "\n"


def on_page_markdown(markdown, page, config, files):
    markdown = _FILE_MARK.sub(lambda m: (ROOT / m.group(1)).read_text(encoding="utf-8"), markdown)
    return _README_MARK.sub(lambda m: readme_section(m.group(1)), markdown)
