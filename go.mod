module github.com/ippool/ippool

go 1.26.8

require (
	go4.org/netipx v0.0.0-20260823151212-3075585bcbeb
	pgregory.net/rapid v1.3.0
)
