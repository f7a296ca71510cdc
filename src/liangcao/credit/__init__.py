"""Credit at the checkout (house plan §11): consumer credit lines, installment plans and merchant loans.

All money lives in the payments core: a line is an account whose limit flags make the core itself refuse an
overdraw.
"""
