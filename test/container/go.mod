module hello/test/container

go 1.24
