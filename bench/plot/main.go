// Command plot draws the ladder's figures (docs/scale.md) from its CSV,
// one PNG per figure, each against mappings on a log axis:
//
//	cd bench/plot && go run . -in ../scale.csv -out ../../docs
//
// A module of its own, so that the plotting library is not a dependency of
// ippool. Where a rung was run more than once, the latest row is drawn.
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"image/color"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// series is one line: a column of the CSV, scaled.
type series struct {
	label, column string
	scale         float64
}

type figure struct {
	file, title, ylabel string
	logY                bool
	lines               []series
}

var figures = []figure{
	{"scale-memory.png", "Memory per mapping, each server", "bytes per mapping", false, []series{
		{"RSS after a collection", "rss_bytes_per_mapping", 1},
		{"live heap", "heap_bytes_per_mapping", 1},
	}},
	{"scale-peak.png", "Memory per server", "MB", true, []series{
		{"peak RSS (VmHWM)", "rss_peak_mb", 1},
		{"RSS after a collection", "rss_mb_max", 1},
		{"live heap", "heap_mb_max", 1},
		{"data dir", "data_dir_mb", 1},
	}},
	{"scale-times.png", "Restore, restart, catch-up, save", "seconds", true, []series{
		{"restore, applied everywhere", "applied_everywhere_s", 1},
		{"restart to ready", "restart_ready_s", 1},
		{"a new server joins and catches up", "join_caught_up_s", 1},
		{"snapshot save", "save_s", 1},
	}},
	{"scale-writes.png", "New allocations, 64 callers over 3 servers", "ms", false, []series{
		{"p50", "new_p50_ms", 1},
		{"p99", "new_p99_ms", 1},
	}},
	{"scale-rates.png", "Throughput", "thousands a second", false, []series{
		{"new allocations", "new_per_s", 1e-3},
		{"lookups on a follower", "lookup_follower_per_s", 1e-3},
		{"DNS mapped names on a follower", "dns_follower_qps", 1e-3},
	}},
	{"scale-gc.png", "Collector, during the load runs", "% of CPU used / ms", false, []series{
		{"GC share of CPU (%)", "gc_cpu_share", 100},
		{"GC pause p99 (ms)", "gc_pause_p99_ms", 1},
	}},
}

func main() {
	in := flag.String("in", "../scale.csv", "the ladder's CSV")
	out := flag.String("out", "../../docs", "directory for the PNGs")
	flag.Parse()
	rows := readRows(*in)
	for _, f := range figures {
		if err := draw1(f, rows, filepath.Join(*out, f.file)); err != nil {
			log.Fatalf("%s: %v", f.file, err)
		}
	}
}

// readRows is the CSV's rows by column name, the latest per mappings,
// in order of mappings.
func readRows(path string) []map[string]string {
	fh, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	defer fh.Close()
	r := csv.NewReader(fh)
	r.FieldsPerRecord = -1
	recs, err := r.ReadAll()
	if err != nil {
		log.Fatal(err)
	}
	if len(recs) < 2 {
		log.Fatalf("%s has no rows", path)
	}
	latest := map[string]map[string]string{}
	for _, rec := range recs[1:] {
		row := map[string]string{}
		for i, name := range recs[0] {
			if i < len(rec) {
				row[name] = rec[i]
			}
		}
		latest[row["mappings"]] = row
	}
	var rows []map[string]string
	for _, row := range latest {
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return num(rows[i], "mappings") < num(rows[j], "mappings") })
	return rows
}

func num(row map[string]string, col string) float64 {
	v, err := strconv.ParseFloat(row[col], 64)
	if err != nil {
		return -1
	}
	return v
}

var palette = []color.Color{
	color.RGBA{31, 119, 180, 255}, color.RGBA{214, 39, 40, 255}, color.RGBA{44, 160, 44, 255}, color.RGBA{255, 127, 14, 255},
}

func draw1(f figure, rows []map[string]string, path string) error {
	p := plot.New()
	p.Title.Text = f.title
	p.X.Label.Text = "mappings"
	p.Y.Label.Text = f.ylabel
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	if f.logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	} else {
		p.Y.Min = 0
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.Add(plotter.NewGrid())
	for i, s := range f.lines {
		var pts plotter.XYs
		for _, row := range rows {
			v := num(row, s.column)
			// A missing column (an older row) or a value a log axis cannot
			// hold is left out.
			if v < 0 || (f.logY && v <= 0) {
				continue
			}
			pts = append(pts, plotter.XY{X: num(row, "mappings"), Y: v * s.scale})
		}
		if len(pts) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		c := palette[i%len(palette)]
		line.Color, points.Color, points.Shape = c, c, draw.CircleGlyph{}
		p.Add(line, points)
		p.Legend.Add(s.label, line, points)
		if f.logY {
			continue
		}
		p.Y.Max = max(p.Y.Max, maxY(pts)*1.25)
	}
	if err := p.Save(16*vg.Centimeter, 10*vg.Centimeter, path); err != nil {
		return fmt.Errorf("saving: %w", err)
	}
	return nil
}

func maxY(pts plotter.XYs) float64 {
	m := 0.0
	for _, p := range pts {
		m = max(m, p.Y)
	}
	return m
}
