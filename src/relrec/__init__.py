"""relrec: related-item lists balancing engagement, semantic relevance and popularity bias.

    from relrec import RelatedItems
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `from relrec import RelatedItems` without importing torch for `relrec.config` users
    if name == "RelatedItems":
        from relrec.related import RelatedItems

        return RelatedItems
    raise AttributeError(name)
