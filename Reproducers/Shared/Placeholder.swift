enum ReproducerPlaceholder {}
