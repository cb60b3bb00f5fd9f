"""The worker side: worker -> consumer -> strategy -> request -> pool -> tracer."""
