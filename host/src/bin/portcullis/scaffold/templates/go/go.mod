module {{name}}

go 1.26
