-- Temp view sv_pieces: every allocation piece with its line item's columns, the piece's team, project, workload
-- and ratio (the savings kinds read it: apportion/savings/).
CREATE OR REPLACE TEMP VIEW sv_pieces AS
SELECT li.*, a.x_Team AS sv_team, a.x_Project AS sv_project, a.x_Workload AS sv_workload,
       CAST(a.x_AllocatedRatio AS DECIMAL(38, 12)) AS sv_ratio
FROM line_items AS li
INNER JOIN allocations AS a USING (x_SourceName, x_BillingMonth, x_LineId);
