"""Shipping contracts: ``dg`` (dangerous-goods declarations)."""
