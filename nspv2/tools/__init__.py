"""The ``nspv2`` command and its command families (check, bench, memory,
stress, fuzz, demo). Library code never imports from here."""
