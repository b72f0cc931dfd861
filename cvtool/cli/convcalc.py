"""`cvtool convcalc` (placeholder: being written)."""
import typer


def convcalc(json_: bool = typer.Option(False, "--json")) -> None:
    """Output-size and padding arithmetic, explained."""
    raise NotImplementedError


def convcalc_tour(quick: bool = False) -> None:
    raise NotImplementedError
