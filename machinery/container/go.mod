module hello/machinery/container

go 1.24
