"""What tests share: servers, clients, fakes, builders. Tests import only from here."""
