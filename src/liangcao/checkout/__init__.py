"""The checkout gateway (house plan §11): orders and escrow in front of the payments core.

The shopper's payment never waits for a block: orders are held as pending transfers in the payments core
(buyer -> escrow) and posted to the merchant on confirmation of receipt or when the auto-confirm window ends.
"""
