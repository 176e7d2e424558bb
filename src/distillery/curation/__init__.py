"""Cold start: training data a team does not have yet (synthesis) or wants answered better
(relabelling), each row checked and every rejection kept with its reason."""
