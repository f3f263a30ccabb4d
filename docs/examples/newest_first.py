"""The email prototype listing wildcard matches newest name first (the
specification says sorted by name): a deliberate difference."""

from nspv2.examples.email import EmailDirectory


class NewestFirst(EmailDirectory):
    def lookup(self, session, restrictions, flags):
        return reversed(list(super().lookup(session, restrictions, flags)))
