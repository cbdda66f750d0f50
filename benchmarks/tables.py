"""A plain-text table, as the benchmarks print them."""


def print_table(header, lines) -> None:
    """Prints ``header`` and ``lines`` (sequences of cells) in left-aligned columns."""
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=True)]
    for line in (header, *lines):
        print(" | ".join(str(x).ljust(w) for x, w in zip(line, widths, strict=True)))
