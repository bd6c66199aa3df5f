// Command partition simulates spreading clients over several independent
// ippool clusters (docs/scale.md, "Past one cluster"): each client ID goes
// to one cluster by rendezvous (highest random weight) hashing over the
// cluster names, and each cluster has a pool prefix of its own. It prints,
// for 1 to -max clusters, how evenly the mappings spread and what share of
// the clients and mappings move when one cluster is added, against the
// modulo hashing a naive router would use:
//
//	go run ./bench/partition -clients 1000000
//
// Clients are named as `snapshot generate` names them; their mappings
// follow a Zipf law (exponent 1.5) (a few clients hold thousands, most a few), which is
// what makes balance a question.
package main

import (
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"

	"github.com/ippool/ippool/internal/snapgen"
)

// score is a fixed function of its input, the same in every router (the
// Go client, every DNS front end and connector): FNV-1a, then SplitMix64's
// finalizer, which spreads FNV's weak high bits.
func score(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	z := h.Sum64()
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// rendezvous is the cluster a client belongs to: the one whose name scores
// highest with it. Adding a cluster moves only the clients it now wins.
func rendezvous(client string, clusters []string) int {
	best, bestScore := 0, uint64(0)
	for i, c := range clusters {
		if s := score(c, client); s > bestScore || i == 0 {
			best, bestScore = i, s
		}
	}
	return best
}

func modulo(client string, clusters []string) int {
	return int(score(client) % uint64(len(clusters)))
}

func main() {
	clients := flag.Int("clients", 1_000_000, "clients")
	most := flag.Int("max", 8, "most clusters")
	flag.Parse()
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.5, 1, 65_535)
	ids := make([]string, *clients)
	weight := make([]int, *clients)
	total := 0
	for c := range ids {
		ids[c] = snapgen.ClientID(c)
		weight[c] = int(zipf.Uint64()) + 1
		total += weight[c]
	}
	fmt.Printf("%d clients, %d mappings (Zipf 1.5: a mean of %d a client, the busiest %d)\n\n", *clients, total, total / *clients, maxOf(weight))
	fmt.Println("| clusters | largest / mean mappings | clients moved by adding one (rendezvous) | mappings moved | clients moved (modulo) |")
	fmt.Println("| ---: | ---: | ---: | ---: | ---: |")
	for k := 1; k <= *most; k++ {
		names := clusterNames(k)
		grown := clusterNames(k + 1)
		per := make([]int, k)
		movedC, movedM, movedMod := 0, 0, 0
		for c, id := range ids {
			at := rendezvous(id, names)
			per[at] += weight[c]
			if rendezvous(id, grown) != at {
				movedC++
				movedM += weight[c]
			}
			if modulo(id, names) != modulo(id, grown) {
				movedMod++
			}
		}
		fmt.Printf("| %d | %.3f | %.1f%% (ideal %.1f%%) | %.1f%% | %.1f%% |\n", k, float64(maxOf(per))/(float64(total)/float64(k)),
			100*float64(movedC)/float64(*clients), 100/float64(k+1), 100*float64(movedM)/float64(total), 100*float64(movedMod)/float64(*clients))
	}
}

func clusterNames(k int) []string {
	names := make([]string, k)
	for i := range names {
		names[i] = fmt.Sprintf("cluster-%d", i+1)
	}
	return names
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
