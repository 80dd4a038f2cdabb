#!/usr/bin/env python3
"""`helm template` without a helm binary: renders a chart with Helm's own Go
template engine, as bundled by the PyPI package helm-python-sdk (module
helm_python: Helm v4's Go library behind a C ABI, loaded with ctypes; it
renders offline, `lookup` returns nothing).

    render.py CHART [--namespace NS] [--values FILE]... [--set-json JSON]... [--lint]

Prints the rendered documents as one multi-document YAML stream, each
preceded by `# Source: <template>` like `helm template`. --lint runs
`helm lint --strict` first and fails on any warning or error.
"""

import argparse
import json
import sys

try:
    import helm_python as helm
except ImportError:
    sys.exit("render.py: the Python package helm-python-sdk is not installed (pip install helm-python-sdk)")


def deep_merge(base, over):
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart")
    parser.add_argument("--namespace", default="podwarn")
    parser.add_argument("--values", "-f", action="append", default=[])
    parser.add_argument("--set-json", action="append", default=[])
    parser.add_argument("--lint", action="store_true")
    args = parser.parse_args()

    values = {}
    for path in args.values:
        with open(path, encoding="utf-8") as f:
            deep_merge(values, helm.values_from_yaml(f.read()) or {})
    for text in args.set_json:
        deep_merge(values, json.loads(text))

    if args.lint:
        report = helm.lint(args.chart, values or None, strict=True, namespace=args.namespace)
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        problems += [{"error": e} for e in report.get("errors", []) or []]
        if problems:
            for m in problems:
                print(f"helm lint: {m.get('path', '')}: {m.get('error')}", file=sys.stderr)
            sys.exit(1)

    try:
        chart = helm.Chart.load(args.chart)
        rendered = chart.render(values or None, name=chart.name, namespace=args.namespace, is_install=True)
    except helm.HelmError as e:
        sys.exit(f"render.py: {e}")
    for source in sorted(rendered):
        text = rendered[source].strip()
        if not text or source.endswith("NOTES.txt"):
            continue
        print(f"---\n# Source: {source}\n{text}")


if __name__ == "__main__":
    main()
