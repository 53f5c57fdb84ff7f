enum SymbolsPlaceholder {}
