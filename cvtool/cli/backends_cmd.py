"""`cvtool backends`: what each backend can really do on this machine."""

from __future__ import annotations

import typer

from cvtool.cli.output import emit_json, out, safe, table


def backends(json_: bool = typer.Option(False, "--json", help="Print one JSON document on stdout.")) -> None:
    """List the backends: available or why not, version, devices, providers/threads."""
    import cvtool_backends as registry

    sts = [registry.status(n) for n in registry.names()]
    if json_:
        emit_json({"backends": [s.to_dict() for s in sts]})
        return
    rows = []
    for s in sts:
        extra = ", ".join(s.providers) if s.providers else (f"{s.threads} thread{'s' if s.threads != 1 else ''}" if s.threads else "")
        if s.providers and s.threads:
            extra += f" ({s.threads} threads)"
        rows.append([safe(s.name), "yes" if s.available else f"no: {safe(s.reason)}", s.version or "-",
                     ", ".join(s.devices) or "-", extra])
    out().print(table("Backends", ["backend", "available", "version", "devices", "providers / threads"], rows))
    for s in sts:
        for note in s.notes:
            out().print(f"[dim]{safe(s.name)}: {safe(note)}[/]")  # a plug-in's name and notes too
