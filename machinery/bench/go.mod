module hello/machinery/bench

go 1.25
