"""Shipping: dangerous-goods declarations sealed for the parties that may read them."""
