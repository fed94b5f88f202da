"""ShortestPathTo: the two-sided search agrees with the one-sided one."""

from __future__ import annotations


def test_shortest_path_lengths_agree_both_ways() -> None:
    """The two-sided search (indexed target) finds paths as short as the one-sided one."""
    import random

    from pyskydive.graph import Graph
    from pyskydive.gremlin import evaluate

    rng = random.Random(7)
    g = Graph("h")
    for i in range(400):
        g.add_node(f"n{i}", {"Name": f"n{i}", "Type": "x", "Tag": f"n{i}"}, origin="o")
    for i in range(700):
        a, b = rng.randrange(400), rng.randrange(400)
        if a != b:
            rel = "ownership" if i % 3 == 0 else "layer2"
            g.add_edge(f"e{i}", f"n{a}", f"n{b}", {"RelationType": rel}, origin="o")
    for j in range(1, 60):
        by_index = evaluate(f"G.V('n0').ShortestPathTo(Metadata('Name', 'n{j}'))", g)
        by_scan = evaluate(f"G.V('n0').ShortestPathTo(Metadata('Tag', 'n{j}'))", g)
        assert len(by_index) == len(by_scan)
        if by_index:
            assert len(by_index[0]) == len(by_scan[0])
            assert by_index[0][-1]["ID"] == f"n{j}"
            for a, b in zip(by_index[0], by_index[0][1:], strict=False):
                assert g.edge_between(a["ID"], b["ID"]) or g.edge_between(b["ID"], a["ID"])
