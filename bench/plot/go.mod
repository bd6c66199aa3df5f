module github.com/ippool/ippool/bench/plot

go 1.26.8
